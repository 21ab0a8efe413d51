import PlatformSim
import SondeCore

@main
enum Entrypoint {
    static func main() async {
        await SondeSimCommand.main(ProcessArguments.afterExecutable)
    }
}

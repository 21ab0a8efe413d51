import SondeCLI
import SondeCore

@main
enum Entrypoint {
    static func main() async {
        await SondeCommand.main(ProcessArguments.afterExecutable)
    }
}

import Logging
import PlatformSim
import SondeCore

@main
enum Entrypoint {
    static func main() async {
        LoggingSystem.bootstrap { SondeLogHandler(label: $0) }
        await SondeSimCommand.main(ProcessArguments.afterExecutable)
    }
}

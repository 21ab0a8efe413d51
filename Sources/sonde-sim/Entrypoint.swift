import Logging
import PlatformSim
import SondeCore

@main
enum Entrypoint {
    static func main() async {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        await SondeSimCommand.main(ProcessArguments.afterExecutable)
    }
}

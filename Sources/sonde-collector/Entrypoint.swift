import Collector
import Logging
import SondeCore

@main
enum Entrypoint {
    static func main() async {
        // The executable owns logging; the library only takes a Logger.
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        await CollectorCommand.main(ProcessArguments.afterExecutable)
    }
}

import Collector
import Logging
import SondeCore

@main
enum Entrypoint {
    static func main() async {
        // The executable owns logging; the library only takes a Logger.
        LoggingSystem.bootstrap { SondeLogHandler(label: $0) }
        await CollectorCommand.main(ProcessArguments.afterExecutable)
    }
}

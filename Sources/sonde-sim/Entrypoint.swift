import Logging
import PlatformSim

@main
enum Entrypoint {
    static func main() async {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        await SondeSimCommand.main()
    }
}

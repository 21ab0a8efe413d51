import Collector
import SondeCore

@main
enum Entrypoint {
    static func main() async {
        await CollectorCommand.main(ProcessArguments.afterExecutable)
    }
}

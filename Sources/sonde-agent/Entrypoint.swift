import AgentRuntime
import SondeCore

/// `sonde-agent`: everything lives in AgentRuntime (see `SondeAgentCommand`), so tests reach it.
@main
enum Entrypoint {
    static func main() async {
        await SondeAgentCommand.main(ProcessArguments.afterExecutable)
    }
}

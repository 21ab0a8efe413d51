import SondeCLI

@main
enum Entrypoint {
    static func main() async {
        await SondeCommand.main()
    }
}

import ArgumentParser
import GraphPasses

/// `bnfold passes`: the built-in passes, a line each.
struct ListPasses: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passes",
        abstract: "List the built-in passes.")

    func run() throws {
        let width = BuiltinPasses.all.map(\.name.count).max() ?? 0
        for pass in BuiltinPasses.all {
            print(pass.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + pass.summary)
        }
    }
}

// bnfold for tests: the same command line, with ``FoldHooks`` set from the
// environment. The shipped `bnfold` reads none of these variables.
//
//   BNFOLD_TEST_BREAK_FOLD=1          after the passes, scale the first
//                                     Conv's weight by 1.01, so that verification
//                                     of its fold must fail (exit 1, nothing written)
//   BNFOLD_TEST_PAUSE_BEFORE_COMMIT=MS sleep MS milliseconds once the
//                                     temporary files are complete, before
//                                     any rename (to interrupt a write there)
import BnfoldCLI
import Foundation
import GraphPasses
import ONNXGraph

/// Scales the weight of the graph's first Conv by 1.01 after the built-in
/// passes; run on a model whose first Conv took a BatchNormalization, the
/// pair check of that fold must fail.
struct BreakFirstFold: GraphPass {
    let name = "test-break-first-fold"
    let summary = "scales the first Conv weight by 1.01 (tests only)"

    func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        for node in graph.nodes where node.isOp("Conv") && node.inputs.count > 1 {
            let weightName = node.inputs[1]
            guard let i = graph.value(named: weightName).initializer,
                  let count = graph[i].elementCount, count > 0,
                  let broken = try? graph[i].scaledBlocks(blockSize: count, scale: [1.01], channelOfBlock: { _ in 0 })
            else { break }
            graph.replaceInitializer(i, with: broken)
            // Not reported as a change: the fixed point must not run it again.
            return PassResult(modified: false)
        }
        return PassResult(modified: false)
    }
}

var hooks = FoldHooks()
let environment = ProcessInfo.processInfo.environment
if environment["BNFOLD_TEST_BREAK_FOLD"] == "1" { hooks.extraPasses = { [BreakFirstFold()] } }
if let value = environment["BNFOLD_TEST_PAUSE_BEFORE_COMMIT"], let milliseconds = Int(value), milliseconds > 0 {
    hooks.beforeCommit = { usleep(useconds_t(milliseconds) * 1000) }
}
FoldHooks.$current.withValue(hooks) { BnfoldMain.main() }

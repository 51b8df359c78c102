import Foundation
import FoldPipeline
import GraphPasses
import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// The library pipeline (read → passes → verify → write) with passes
/// injected the way a user's tool would: a wrong fold is stopped by the same
/// verification a default run gets, and nothing is written.
@Suite struct FoldPipelineTests {
    /// Scales the first Conv weight by `factor` after the built-in passes.
    struct ScaleFirstConv: GraphPass {
        let name = "scale-first-conv"
        let summary = "test pass"
        var factor: Double
        func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
            guard context.scope.path.isEmpty,
                  let conv = graph.nodes.first(where: { $0.isOp("Conv") }),
                  let i = graph.value(named: conv.inputs[1]).initializer,
                  let count = graph[i].elementCount else { return PassResult(modified: false) }
            graph.replaceInitializer(i, with: try graph[i].scaledBlocks(
                blockSize: count, scale: [factor], channelOfBlock: { _ in 0 }))
            return PassResult(modified: false)
        }
    }

    @Test func aWrongFoldIsRefusedAndNothingIsWritten() throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture("torch_tiny_resnet.onnx")
        let out = scratch.file("out.onnx")
        let pipeline = FoldPipeline(passes: BuiltinPasses.all + [ScaleFirstConv(factor: 1.01)])
        #expect {
            _ = try pipeline.run(input: input, output: out)
        } throws: { error in
            // Every recorded fold is right; the extra pass changed a weight
            // without a record, so the whole-model check catches it and the
            // message names the pass.
            guard case .verificationFailed(let file, let message)? = error as? FoldPipeline.Failure else { return false }
            return file == input && message.hasPrefix("whole model, output '60': error ")
                && message.hasSuffix("; pass 'scale-first-conv' changed the graph without a rewrite record")
        }
        #expect(scratch.contents().isEmpty)
    }

    /// Where the whole-model check cannot run (an If node), a change without
    /// a record is not verified, and the outcome says so.
    @Test func anUnrecordedChangeThatNothingChecksIsNamed() throws {
        let scratch = ScratchDirectory()
        let outcome = try FoldPipeline(passes: BuiltinPasses.all + [ScaleFirstConv(factor: 1.01)])
            .run(input: TestPaths.fixture("subgraph_if.onnx"), output: scratch.file("out.onnx"))
        let v = outcome.verification
        #expect(v.failure == nil)
        #expect(v.summary.unrecordedPasses == ["scale-first-conv"])
        #expect(v.summary.wholeModel.hasPrefix("skipped: unsupported operators If"))
        #expect(v.notes.contains("pass 'scale-first-conv' changed the graph without a rewrite record, and the whole-model check did not run: those changes are not verified"))
        // The built-in folds are all recorded and pair-checked, bodies included.
        #expect(v.summary.pairsChecked == 3)
        #expect(outcome.passReport.unrecordedPasses == ["scale-first-conv"])
    }

    /// Every kind of fold is pair-checked from its record: Mul and Add into
    /// a Conv, a BN forward into the Conv after it, and each step of a
    /// BN → Conv → BN chain — the folds a graph diff could not pair.
    @Test(arguments: [
        ("conv_mul_add.onnx", ["fold-mul-add", "fold-mul-add"], ["ConvMulFolded", "ConvAddFolded"]),
        ("bn_conv_nopad.onnx", ["fold-batchnorm-forward"], ["BatchNormConvFolded"]),
        ("chain_bn_conv_bn.onnx", ["fold-batchnorm", "fold-batchnorm-forward"], ["ConvBatchNormFolded", "BatchNormConvFolded"]),
    ])
    func everyFoldIsPairChecked(fixture: String, passes: [String], reasons: [String]) throws {
        let scratch = ScratchDirectory()
        let outcome = try FoldPipeline(passes: BuiltinPasses.all)
            .run(input: TestPaths.fixture(fixture), output: scratch.file("out.onnx"))
        #expect(outcome.passReport.records.map(\.pass) == passes)
        #expect(outcome.passReport.records.map(\.reason) == reasons)
        #expect(outcome.passReport.unrecordedPasses.isEmpty)
        #expect(outcome.verification.summary.pairsChecked == passes.count)
        #expect(outcome.verification.summary.pairsFailed == 0)
        #expect(outcome.verification.summary.wholeModel == "passed")
    }

    @Test func theSamePipelineWithoutTheBrokenPassFoldsAndWrites() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("out.onnx")
        let outcome = try FoldPipeline(passes: BuiltinPasses.all).run(input: TestPaths.fixture("torch_tiny_resnet.onnx"), output: out)
        #expect(outcome.before.batchNorms == 6)
        #expect(outcome.foldedCount == 6)
        #expect(outcome.verification.failure == nil)
        #expect(outcome.verification.summary.pairsChecked == 6)
        #expect(outcome.verification.summary.wholeModel == "passed")
        #expect(try ModelReader.read(path: out).graph?.nodes.contains { $0.isOp("BatchNormalization") } == false)
    }

    /// A factor of 1 changes no number: verification passes (the check
    /// compares values, not the pass list).
    @Test func anExactExtraPassStillVerifies() throws {
        let scratch = ScratchDirectory()
        let outcome = try FoldPipeline(passes: BuiltinPasses.all + [ScaleFirstConv(factor: 1)])
            .run(input: TestPaths.fixture("torch_tiny_resnet.onnx"), output: scratch.file("out.onnx"))
        #expect(outcome.verification.failure == nil)
    }

    @Test func theInputIsNeverTheOutput() throws {
        let input = TestPaths.fixture("torch_tiny_resnet.onnx")
        #expect {
            _ = try FoldPipeline(passes: []).run(input: input, output: input)
        } throws: { error in
            guard case .input(let e)? = error as? FoldPipeline.Failure else { return false }
            return e.description.hasSuffix("is the input file; pass --in-place to overwrite it")
        }
    }

    /// README's `FoldPipeline` example on a fixture (README names the
    /// files "model.onnx" and "fused.onnx"); the lines between the markers
    /// must be README's.
    @Test func readmeExampleRuns() throws {
        let scratch = ScratchDirectory()
        let (input, output) = (TestPaths.fixture("torch_tiny_resnet.onnx"), scratch.file("fused.onnx"))
        var printed = ""
        func print(_ line: String) { printed += line }
        // README begins
        let outcome = try FoldPipeline(passes: BuiltinPasses.all).run(input: input, output: output)
        print("folded \(outcome.foldedCount) BatchNormalization(s); whole model \(outcome.verification.summary.wholeModel)")
        // README ends
        #expect(printed == "folded 6 BatchNormalization(s); whole model passed")
        #expect(scratch.contents() == ["fused.onnx"])

        let source = try String(contentsOf: TestPaths.root.appendingPathComponent("Tests/BnfoldCLITests/FoldPipelineTests.swift"), encoding: .utf8)
        let readme = try String(contentsOf: TestPaths.root.appendingPathComponent("README.md"), encoding: .utf8)
        let begin = try #require(source.range(of: "// README begins\n"))
        let end = try #require(source.range(of: "        // README ends", range: begin.upperBound..<source.endIndex))
        let tested = source[begin.upperBound..<end.lowerBound].split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(tested.count == 2)
        for line in tested { #expect(readme.contains("\n" + line + "\n"), "README lacks: \(line)") }
    }
}

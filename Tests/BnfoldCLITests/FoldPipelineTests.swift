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
            guard case .verificationFailed(let file, let message)? = error as? FoldPipeline.Failure else { return false }
            return file == input && message.contains("/stem/stem.1/BatchNormalization")
        }
        #expect(scratch.contents().isEmpty)
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

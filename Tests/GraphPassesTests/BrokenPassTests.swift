import Foundation
import Testing
import GraphPasses
import ONNXFile
import ONNXGraph
import TestSupport

/// A pass that breaks the graph is caught where it happens (the pass
/// manager validates after each pass in debug builds, so in every test),
/// and the writer never turns a broken graph into a file.
@Suite struct BrokenPassTests {
    /// Drops the first BatchNormalization without rewiring its readers.
    struct DropFirstBatchNorm: GraphPass {
        let name = "drop-bn"
        let summary = "Removes a BN and leaves its readers dangling (a bug, on purpose)."
        func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
            guard let i = graph.nodes.firstIndex(where: { $0.isOp("BatchNormalization") }) else { return PassResult(modified: false) }
            graph.nodes.remove(at: i)
            return PassResult(modified: true)
        }
    }

    func model() throws -> Model { try ModelReader.read(path: TestPaths.fixture("torch_tiny_resnet.onnx")) }

    @Test func thePassManagerNamesThePassThatBrokeTheGraph() throws {
        var m = try model()
        #expect {
            _ = try PassManager(passes: [DropFirstBatchNorm()]).run(on: &m)
        } throws: { error in
            guard let e = error as? PassError else { return false }
            return e.pass == "drop-bn" && e.message.hasPrefix("pass drop-bn left an invalid graph: ")
        }
    }

    @Test func theWriterRefusesAnInvalidModelUnlessAskedNotToCheck() throws {
        var m = try model()
        var g = try #require(m.graph)
        g.nodes.remove(at: try #require(g.nodes.firstIndex { $0.isOp("BatchNormalization") }))
        m.graph = g
        let scratch = ScratchDirectory()
        let out = scratch.file("broken.onnx")
        #expect {
            _ = try ModelWriter.write(m, to: out)
        } throws: { error in
            (error as? ModelFileError)?.problem.hasPrefix("not written: the model is not valid: ") == true
        }
        #expect(scratch.contents().isEmpty)
        _ = try ModelWriter.write(m, to: out, options: WriteOptions(validatesModel: false))
        #expect(scratch.contents() == ["broken.onnx"])
    }
}

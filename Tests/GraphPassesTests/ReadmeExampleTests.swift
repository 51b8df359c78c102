import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph
import Testing
import TestSupport
@testable import ExamplePass

// The library example from README.md and the DocC article
// (Sources/GraphPasses/GraphPasses.docc/WritingAPass.md): its one compiled
// copy is bench/ExamplePass/RemoveIdentityAndDropout.swift (which
// `make bench` times), checked here to be the documented text and run.

@Suite struct ReadmeExampleTests {
    @Test func readmeLibraryExampleRuns() throws {
        let scratch = ScratchDirectory()
        // The README's steps, on a fixture with an Identity and a Dropout
        // between the Conv and the BN.
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        var graph = try #require(model.graph)
        let bnIndex = try #require(graph.nodes.firstIndex { $0.opType == "BatchNormalization" })
        let convOutput = graph.nodes[bnIndex].inputs[0]
        graph.nodes.insert(contentsOf: [
            Node(opType: "Identity", inputs: [convOutput], outputs: ["id_out"], name: "id"),
            Node(opType: "Dropout", inputs: ["id_out"], outputs: ["drop_out"], name: "drop"),
        ], at: bnIndex)
        graph.nodes[bnIndex + 2].inputs[0] = "drop_out"
        model.graph = graph

        let manager = PassManager(passes: BuiltinPasses.all + [RemoveIdentityAndDropout()])
        let report = try manager.run(on: &model)
        #expect(report.remarks.filter { $0.kind == .missed }.isEmpty)
        #expect(report.remarks.map(\.reason) == ["PassThroughRemoved", "PassThroughRemoved", "ConvBatchNormFolded"])
        #expect(report.remarks.prefix(2).map(\.node) == ["id", "drop"])
        // Round 1 removes the Identity and the Dropout (the BN's producer is
        // then the Conv), round 2 folds, round 3 finds nothing to do.
        #expect(report.iterations == 3)
        #expect(model.graph?.nodes.map(\.opType) == ["Conv"])
        _ = try ModelWriter.write(model, to: scratch.file("fused.onnx"))
        #expect(scratch.contents() == ["fused.onnx"])
    }

    /// The pass's source is the same in README.md, the DocC article and the
    /// compiled copy, so the documented example is the tested one.
    @Test func documentedPassIsTheTestedOne() throws {
        func passSource(_ relative: String) throws -> String {
            let text = try String(contentsOf: TestPaths.root.appendingPathComponent(relative), encoding: .utf8)
            let start = try #require(text.range(of: "struct RemoveIdentityAndDropout: RewritePattern {"), "\(relative)")
            let end = try #require(text.range(of: "\n}\n", range: start.upperBound..<text.endIndex), "\(relative)")
            return String(text[start.lowerBound..<end.upperBound])
        }
        let tested = try passSource("bench/ExamplePass/RemoveIdentityAndDropout.swift")
        #expect(try passSource("README.md") == tested)
        #expect(try passSource("Sources/GraphPasses/GraphPasses.docc/WritingAPass.md") == tested)
    }

    /// README's `Package.swift` snippet depends only on library products
    /// this package declares, under the package identity it names.
    @Test func packageSnippetNamesRealProducts() throws {
        let readme = try String(contentsOf: TestPaths.root.appendingPathComponent("README.md"), encoding: .utf8)
        let manifest = try String(contentsOf: TestPaths.root.appendingPathComponent("Package.swift"), encoding: .utf8)
        let start = try #require(readme.range(of: "// Package.swift of your tool"))
        let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
        let snippet = String(readme[start.lowerBound..<end.lowerBound])
        #expect(snippet.contains(".package(path: \"../bnfold\")"))
        let products = snippet.components(separatedBy: ".product(name: \"").dropFirst().map {
            String($0.prefix { $0 != "\"" })
        }
        #expect(products == ["GraphPasses", "ONNXFile", "ONNXGraph"])
        for product in products {
            #expect(manifest.contains(".library(name: \"\(product)\""), "\(product)")
        }
        #expect(snippet.components(separatedBy: "package: \"bnfold\")").count - 1 == products.count)
    }

    /// A Dropout whose mask is read is not a pass-through: it stays.
    @Test func dropoutWithUsedMaskStays() throws {
        var graph = Graph(name: "g", nodes: [
            Node(opType: "Dropout", inputs: ["x"], outputs: ["y", "mask"], name: "drop"),
            Node(opType: "Relu", inputs: ["y"], outputs: ["z"], name: "relu"),
            Node(opType: "Not", inputs: ["mask"], outputs: ["m2"], name: "not"),
        ])
        graph.inputs = [ValueInfo(name: "x")]
        graph.outputs = [ValueInfo(name: "z"), ValueInfo(name: "m2")]
        var model = Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: graph)
        let report = try PassManager(passes: [RemoveIdentityAndDropout()]).run(on: &model)
        #expect(report.remarks.map(\.reason) == ["MaskUsed"])
        #expect(report.remarks.first?.node == "drop")
        #expect(model.graph == graph)
    }
}

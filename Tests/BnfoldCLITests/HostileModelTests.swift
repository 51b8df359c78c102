import Foundation
import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// Well-formed protobuf, ill-formed models: each gives exit 2, one line
/// naming the file and the problem, and no output file.
@Suite struct HostileModelTests {
    /// A mutation of the Conv → BN fixture, and a phrase the error must contain.
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let phrase: String
        let mutate: @Sendable (inout Graph) -> Void
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "cycle", phrase: "cycle") { g in
            // conv reads the BN's output, which is computed from conv's output.
            g.nodes[0].inputs[0] = g.nodes[1].outputs[0]
        },
        Case(name: "not topologically sorted", phrase: "before") { g in g.nodes.reverse() },
        Case(name: "input never produced", phrase: "which no node, input or initializer defines") { g in
            g.nodes[1].inputs[3] = "nowhere"
        },
        Case(name: "duplicate value name", phrase: "defined twice") { g in
            g.nodes.append(Node(opType: "Relu", inputs: [g.inputs[0].name!], outputs: [g.nodes[0].outputs[0]], name: "dup"))
        },
        Case(name: "duplicate initializer", phrase: "defined twice") { g in g.initializers.append(g.initializers[0]) },
        Case(name: "graph output undefined", phrase: "is not computed") { g in g.outputs[0].name = "ghost" },
        Case(name: "attribute of the wrong type", phrase: "needs FLOAT") { g in
            g.nodes[1].attributes.removeAll { $0.name == "epsilon" }
            g.nodes[1].attributes.append(.int("epsilon", 1))
        },
        Case(name: "attribute string where ints expected", phrase: "needs INTS") { g in
            g.nodes[0].attributes.removeAll { $0.name == "strides" }
            g.nodes[0].attributes.append(.string("strides", "wide"))
        },
        Case(name: "wrong element type for an op", phrase: "needs float16, float, double or bfloat16") { g in
            let w = g.nodes[0].inputs[1]
            let i = g.initializers.firstIndex { $0.name == w }!
            let count = g.initializers[i].elementCount!
            var t = Tensor(name: w, elementType: .int64, dims: g.initializers[i].dims)
            t.rawData = ByteBuffer([UInt8](repeating: 1, count: count * 8))
            g.initializers[i] = t
        },
        Case(name: "BN with too few inputs", phrase: "takes 5") { g in g.nodes[1].inputs.removeLast(2) },
        Case(name: "attribute given twice", phrase: "twice") { g in
            g.nodes[1].attributes.append(.float("epsilon", 0.5))
            g.nodes[1].attributes.append(.float("epsilon", 0.25))
        },
        Case(name: "data shorter than the shape", phrase: "needs") { g in
            g.initializers[0].rawData = ByteBuffer([UInt8](repeating: 0, count: 3))
        },
        Case(name: "negative dimension", phrase: "invalid dimensions") { g in g.initializers[0].dims[0] = -3 },
    ]

    @Test(arguments: cases)
    func hostileModelExitsTwo(_ c: Case) throws {
        let scratch = ScratchDirectory()
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        var graph = try #require(model.graph)
        c.mutate(&graph)
        model.graph = graph
        let input = scratch.file("hostile.onnx")
        _ = try ModelWriter.write(model, to: input, options: WriteOptions(validatesModel: false))
        let out = scratch.file("out.onnx")
        for extra in [[String](), ["--passes", "none"]] {
            let r = try runBnfold([input, "-o", out] + extra)
            #expect(r.status == 2, "\(c.name) \(extra): \(r.stderr)")
            #expect(r.stderrLines.count == 1, "\(c.name): \(r.stderr)")
            #expect(r.stderr.hasPrefix("bnfold: error: \(input): "))
            #expect(r.stderr.contains(c.phrase), "\(c.name): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out))
        }
        #expect(scratch.contents() == ["hostile.onnx"])
    }

    /// A 1.2 KB file claiming a 400 GB tensor: rejected under a 1 GiB
    /// address-space limit, so nothing near the claimed size was ever
    /// allocated. (Skipped for the AddressSanitizer build, whose shadow
    /// memory needs terabytes of address space.)
    @Test func hugeClaimIsRejectedWithinAMemoryLimit() throws {
        guard !TestPaths.bnfoldBinary.contains(".build-asan") else { return }
        let scratch = ScratchDirectory()
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        var graph = try #require(model.graph)
        graph.initializers[0].dims = [100_000, 1_000_000]
        model.graph = graph
        let input = scratch.file("claims-400GB.onnx")
        _ = try ModelWriter.write(model, to: input)
        let r = try runCommand("/bin/sh", ["-c", "ulimit -v 1048576 && exec \"$0\" \"$@\"", TestPaths.bnfoldBinary,
                                           input, "-o", scratch.file("out.onnx")])
        #expect(r.status == 2)
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.contains("needs 400000000000"), "\(r.stderr)")
        #expect(scratch.contents() == ["claims-400GB.onnx"])
    }
}

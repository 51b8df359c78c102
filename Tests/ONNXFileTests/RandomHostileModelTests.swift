import Foundation
import GraphPasses
@testable import ONNXFile
import Equivalence
import ONNXGraph
import ReferenceRuntime
import Testing
import TestSupport

/// A structure-aware generator of hostile models: valid protobuf, built from
/// the fixtures by random mutations (negative or enormous dimensions, data
/// shorter than the shape, nonsense element types, attributes of the wrong
/// type, cycles, duplicate and undefined names, unknown opsets, strange
/// external locations; and the classes of issue 9: window attributes at
/// the ends of Int64, enormous declared inputs, ConstantOfShape/Expand to
/// huge shapes, names with terminal escapes or a NUL, segments, many
/// tensors on one external region). Accepted models are also verified
/// under a 256 MiB memory budget. Every outcome must be a clean answer: the model is
/// accepted, or rejected with an error bnfold reports as one line — never a
/// crash, a trap or a hang. Seeded, so a failure names a reproducible case.
@Suite struct RandomHostileModelTests {
    static let fixtures = ["conv2d_bn.onnx", "torch_tiny_resnet.onnx", "subgraph_if.onnx", "conv2d_bn_fp16.onnx",
                           "conv2d_bn_constant_nodes.onnx", "shared_weight_two_convs.onnx", "conv2d_bn_typed_data.onnx"]

    /// The seeded generator with the two picks this generator needs.
    struct Random {
        var generator: SplitMix64
        init(state: UInt64) { generator = SplitMix64(seed: state) }
        mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(generator.next() % UInt64(n)) }
        mutating func pick<T>(_ list: [T]) -> T { list[below(list.count)] }
    }

    static let strangeInts: [Int64] = [-1, 0, 1, 3, 7, 1 << 31, Int64.max, Int64.min, -(1 << 40), 1 << 40]

    static func mutate(_ graph: inout Graph, model: inout Model, _ r: inout Random) {
        let names = Array(graph.allNames) + ["", "nowhere", "../x", "/etc/passwd"]
        switch r.below(18) {
        case 0 where !graph.initializers.isEmpty:
            let i = r.below(graph.initializers.count)
            if !graph.initializers[i].dims.isEmpty {
                graph.initializers[i].dims[r.below(graph.initializers[i].dims.count)] = r.pick(strangeInts)
            } else {
                graph.initializers[i].dims = [r.pick(strangeInts)]
            }
        case 1 where !graph.initializers.isEmpty:
            let i = r.below(graph.initializers.count)
            if let raw = graph.initializers[i].rawData {
                graph.initializers[i].rawData = raw.slice(offset: 0, count: r.below(raw.count + 1))
            }
        case 2 where !graph.initializers.isEmpty:
            graph.initializers[r.below(graph.initializers.count)].dataType = Int32(r.below(40)) - 5
        case 3 where !graph.nodes.isEmpty:
            let n = r.below(graph.nodes.count)
            if !graph.nodes[n].inputs.isEmpty {
                graph.nodes[n].inputs[r.below(graph.nodes[n].inputs.count)] = r.pick(names)
            }
        case 4 where !graph.nodes.isEmpty:
            let n = r.below(graph.nodes.count)
            if !graph.nodes[n].outputs.isEmpty {
                graph.nodes[n].outputs[r.below(graph.nodes[n].outputs.count)] = r.pick(names)
            }
        case 5 where graph.nodes.count > 1:
            graph.nodes.swapAt(r.below(graph.nodes.count), r.below(graph.nodes.count))
        case 6 where !graph.nodes.isEmpty:
            let n = r.below(graph.nodes.count)
            if !graph.nodes[n].attributes.isEmpty {
                let a = r.below(graph.nodes[n].attributes.count)
                graph.nodes[n].attributes[a].type = Attribute.Kind(rawValue: Int32(r.below(16)))
            }
        case 7 where !graph.nodes.isEmpty:
            graph.nodes[r.below(graph.nodes.count)].opType = r.pick(["Conv", "BatchNormalization", "Relu", "If", "X"])
        case 8 where !graph.nodes.isEmpty:
            graph.nodes.append(graph.nodes[r.below(graph.nodes.count)])
        case 9:
            if !model.opsetImports.isEmpty { model.opsetImports[0].version = r.pick(strangeInts) }
        case 10 where !graph.initializers.isEmpty:
            let i = r.below(graph.initializers.count)
            graph.initializers[i].dataLocation = 1
            graph.initializers[i].rawData = nil
            graph.initializers[i].externalData = [
                StringPair(key: "location", value: r.pick(["x.bin", "../x.bin", "/etc/passwd", "", "a/../../b"])),
                StringPair(key: "offset", value: r.pick(["0", "-1", "99999999999", "abc"])),
            ]
        case 11 where !graph.nodes.isEmpty:
            let n = r.below(graph.nodes.count)
            graph.nodes[n].attributes.append(.float(r.pick(["epsilon", "group", "strides", "training_mode"]), 0.5))
        case 12 where !graph.nodes.isEmpty:
            // Window attributes at the ends of Int64 (dilation 2⁶², pads INT64_MIN, stride 0, …).
            let n = r.below(graph.nodes.count)
            let name = r.pick(["dilations", "pads", "strides", "kernel_shape", "group", "output_padding"])
            graph.nodes[n].attributes.removeAll { $0.name == name }
            let count = name == "pads" ? 4 : 2
            graph.nodes[n].attributes.append(name == "group" ? .int(name, r.pick(strangeInts))
                                             : .ints(name, (0..<count).map { _ in r.pick(strangeInts + [8000, 23000]) }))
        case 13 where !graph.inputs.isEmpty:
            // A declared input of enormous (or negative) size.
            let i = r.below(graph.inputs.count)
            if var type = graph.inputs[i].type?.tensorType, var shape = type.shape, !shape.dims.isEmpty {
                shape.dims[r.below(shape.dims.count)] = TensorShape.Dimension(value: .value(r.pick(strangeInts + [46000])))
                type.shape = shape
                graph.inputs[i].type = TypeProto(value: .tensor(type))
            }
        case 14:
            // ConstantOfShape / Expand to a huge shape, read by a new output.
            let k = "hostile_k\(graph.nodes.count)"
            let dims = (0..<(1 + r.below(3))).map { _ in r.pick([1024, 1_048_576, 46000, 2_147_483_648, -1] as [Double]) }
            graph.initializers.append(makeTensor(k + "_shape", .int64, dims: [dims.count], values: dims))
            let op = r.pick(["ConstantOfShape", "Expand"])
            let inputs = op == "Expand" ? [graph.inputs.first?.name ?? k, k + "_shape"] : [k + "_shape"]
            graph.nodes.append(Node(opType: op, inputs: inputs, outputs: [k], name: k))
            graph.outputs.append(ValueInfo(name: k))
        case 15 where !graph.nodes.isEmpty:
            // Names with terminal escapes, newlines and a NUL: printed escaped, kept as they are.
            graph.nodes[r.below(graph.nodes.count)].name = r.pick(["a\n/x: forged\u{1b}]0;t\u{07}", "\u{1b}[2J", "nul\u{0}cut", "\u{202e}rtl"])
        case 16 where !graph.initializers.isEmpty:
            // A segment: refused on read.
            graph.initializers[r.below(graph.initializers.count)].segment = Tensor.Segment(begin: 0, end: Int64(r.below(4)))
        case 17 where graph.initializers.count > 1:
            // Many tensors naming one external region.
            for i in graph.initializers.indices {
                graph.initializers[i].dataLocation = 1
                graph.initializers[i].rawData = nil
                graph.initializers[i].externalData = [StringPair(key: "location", value: "shared.bin"),
                                                      StringPair(key: "offset", value: "0"),
                                                      StringPair(key: "length", value: "64")]
            }
        default:
            graph.outputs.append(ValueInfo(name: r.pick(names)))
        }
    }

    @Test func randomHostileModelsGetCleanAnswers() throws {
        let scratch = ScratchDirectory()
        var r = Random(state: 20261121)
        var accepted = 0, rejected = 0
        for round in 0..<300 {
            let fixture = r.pick(Self.fixtures)
            var model = try ModelReader.read(path: TestPaths.fixture(fixture))
            var graph = try #require(model.graph)
            for _ in 0..<(1 + r.below(3)) { Self.mutate(&graph, model: &model, &r) }
            model.graph = graph
            let path = scratch.file("case-\(round).onnx")
            do {
                _ = try ModelWriter.write(model, to: path, options: WriteOptions(validatesModel: false))
            } catch is ModelFileError {
                continue  // e.g. the mutation made a tensor's data unreadable: nothing to test
            }
            do {
                var back = try ModelReader.read(path: path)
                try back.validate()
                let original = back
                let records = try PassManager(passes: BuiltinPasses.all).run(on: &back).records
                // The fold's verification under a budget: whatever the
                // model asks for, an answer (pass, fail, skip), no abort.
                MemoryBudget(bytes: 256 << 20).enforce {
                    _ = FoldVerifier.verify(records, irVersion: back.irVersion, opsetImports: back.opsetImports)
                    _ = FoldVerifier.verifyWholeModel(original: original, folded: back)
                }
                _ = try ModelWriter.packedSize(back)
                accepted += 1
            } catch is ModelFileError {
                rejected += 1
            } catch is ModelValidationError {
                rejected += 1
            } catch is PassError {
                rejected += 1
            } catch {
                Issue.record("round \(round) (\(fixture)): unexpected error \(type(of: error)): \(error)")
            }
            try? FileManager.default.removeItem(atPath: path)
        }
        // The generator must really produce both kinds.
        #expect(rejected > 50)
        #expect(accepted > 10)
    }
}

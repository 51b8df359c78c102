import Foundation
import Testing
import GraphPasses
import ONNXFile
import ONNXGraph
import TestSupport

/// `bnfold check A B`: exit codes 0 / 1 / 2, the report, input files.
@Suite("bnfold check")
struct CheckCommandTests {
    static func write(_ model: Model, _ path: String) throws {
        _ = try ModelWriter.write(model, to: path)
    }

    static func folded(_ model: Model) throws -> Model {
        var m = model
        _ = try PassManager(passes: [FoldBatchNorm()]).run(on: &m)
        return m
    }

    // (a) bnfold's own fold of a deep float32 network passes.
    @Test func correctFoldIsEquivalent() throws {
        let scratch = ScratchDirectory()
        let original = TestPaths.fixture("torch_resnet18.onnx")
        try Self.write(Self.folded(ModelReader.read(path: original)), scratch.file("fused.onnx"))
        let r = try runBnfold(["check", original, scratch.file("fused.onnx")])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.isEmpty)
        #expect(r.stdout.contains("max abs diff"))
        #expect(r.stdout.hasSuffix("  equivalent\n"))
    }

    // (b) A fold that ignored ε fails.
    @Test func foldWithoutEpsilonDiffers() throws {
        let scratch = ScratchDirectory()
        let original = TestPaths.fixture("torch_resnet18.onnx")
        let broken = try Self.folded(ModelReader.read(path: original).withBatchNormEpsilon(1e-12))
        try Self.write(broken, scratch.file("broken.onnx"))
        let r = try runBnfold(["check", original, scratch.file("broken.onnx")])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.isEmpty)
        #expect(r.stdout.contains("NOT EQUIVALENT"))
    }

    // (c) ConvTranspose folded along the input-channel axis fails; the right axis passes.
    @Test func convTransposeWrongAxisDiffers() throws {
        let scratch = ScratchDirectory()
        try Self.write(ConvTransposeBN.original(), scratch.file("a.onnx"))
        try Self.write(ConvTransposeBN.folded(channelAxis: 1), scratch.file("right.onnx"))
        try Self.write(ConvTransposeBN.folded(channelAxis: 0), scratch.file("wrong.onnx"))
        var r = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("right.onnx")])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        r = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("wrong.onnx")])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        // bnfold's own fold does not handle ConvTranspose yet, so it keeps the BN: still equivalent.
        try Self.write(Self.folded(ConvTransposeBN.original()), scratch.file("kept.onnx"))
        r = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("kept.onnx")])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }

    // (f) --json: one object with per-output fields.
    @Test func jsonReport() throws {
        let scratch = ScratchDirectory()
        try Self.write(ConvTransposeBN.original(), scratch.file("a.onnx"))
        try Self.write(ConvTransposeBN.folded(channelAxis: 0), scratch.file("wrong.onnx"))
        let r = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("wrong.onnx"), "--json", "--samples", "3", "--seed", "5"])
        #expect(r.status == 1)
        #expect(r.stdout.split(separator: "\n").count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["equivalent"] as? Bool == false)
        #expect(object["rule"] as? String == "derived")
        #expect(object["k"] as? Double == 8)
        #expect(object["samples"] as? Int == 3)
        #expect(object["seed"] as? Int == 5)
        let outputs = try #require(object["outputs"] as? [[String: Any]])
        let y = try #require(outputs.first)
        #expect(outputs.count == 1)
        #expect(y["name"] as? String == "y")
        #expect(y["element_type"] as? String == "float")
        #expect(y["shape"] as? [Int] == [1, 5, 8, 8])
        for key in ["max_abs_diff", "max_rel_diff", "cosine_similarity", "error", "reference_noise", "scale", "bound", "ratio"] {
            #expect(y[key] is Double, "\(key)")
        }
        #expect(y["equivalent"] as? Bool == false)
        #expect((y["ratio"] as? Double ?? 0) > 1)

        let t = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("a.onnx"), "--json", "--rtol", "0", "--atol", "0"])
        #expect(t.status == 0, "\(t.stdout)\(t.stderr)")
        let same = try #require(try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any])
        #expect(same["rule"] as? String == "tolerance")
        #expect(same["equivalent"] as? Bool == true)
    }

    // (e) Usage and input errors: exit 2, one line, no report.
    @Test(arguments: [
        ["check", "A_MODEL"],
        ["check", "A_MODEL", "A_MODEL", "--samples", "0"],
        ["check", "A_MODEL", "A_MODEL", "--rtol", "-1"],
        ["check", "A_MODEL", "A_MODEL", "--input-shape", "x=1,a"],
        ["check", "A_MODEL", "A_MODEL", "--input-shape", "nope=1,2"],
        ["check", "A_MODEL", "A_MODEL", "--input", "x"],
        ["check", "A_MODEL", "A_MODEL", "--input", "x=/nonexistent.npy"],
        ["check", "A_MODEL", "A_MODEL", "--input", "other=NPY"],
        ["check", "A_MODEL", "/nonexistent.onnx"],
        ["check", "A_MODEL", "B_OTHER"],
    ])
    func badArguments(_ arguments: [String]) throws {
        let scratch = ScratchDirectory()
        try Self.write(ConvTransposeBN.original(), scratch.file("a.onnx"))
        try Data(NumPy.array(shape: [1, 3, 6, 6], float32: Array(repeating: 1, count: 108))).write(to: URL(fileURLWithPath: scratch.file("x.npy")))
        let args = arguments.map { arg in
            arg.replacingOccurrences(of: "A_MODEL", with: scratch.file("a.onnx"))
                .replacingOccurrences(of: "B_OTHER", with: TestPaths.fixture("conv2d_bn.onnx"))
                .replacingOccurrences(of: "NPY", with: scratch.file("x.npy"))
        }
        let r = try runBnfold(args)
        #expect(r.status == 2, "\(args): \(r.stdout)\(r.stderr)")
        #expect(r.stdout.isEmpty)
        #expect(r.stderrLines.count == 1, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("bnfold: error: "))
    }

    // (d) Inputs from .npy (float32 and float64) and TensorProto .pb files.
    @Test func inputFiles() throws {
        let scratch = ScratchDirectory()
        try Self.write(ConvTransposeBN.original(), scratch.file("a.onnx"))
        try Self.write(ConvTransposeBN.folded(), scratch.file("b.onnx"))
        try Self.write(ConvTransposeBN.folded(channelAxis: 0), scratch.file("wrong.onnx"))
        var rng = SeededGenerator(seed: 3)
        let values = rounded(rng.normals(108, standardDeviation: 1), to: .float)
        try Data(NumPy.array(shape: [1, 3, 6, 6], float32: values)).write(to: URL(fileURLWithPath: scratch.file("x.npy")))
        try Data(TensorProtoBytes.float(name: "x", dims: [1, 3, 6, 6], values: values)).write(to: URL(fileURLWithPath: scratch.file("x.pb")))
        for file in ["x.npy", "x.pb"] {
            var r = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("b.onnx"), "--input", "x=" + scratch.file(file), "--json"])
            #expect(r.status == 0, "\(file): \(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("\"samples\":1"))
            r = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("wrong.onnx"), "--input", "x=" + scratch.file(file)])
            #expect(r.status == 1, "\(file): \(r.stdout)\(r.stderr)")
        }
        // The same values through both files give the same report.
        let viaNpy = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("wrong.onnx"), "--input", "x=" + scratch.file("x.npy"), "--json"])
        let viaPb = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("wrong.onnx"), "--input", "x=" + scratch.file("x.pb"), "--json"])
        #expect(viaNpy.stdout == viaPb.stdout)

        // float64 .npy for a double model.
        let f64 = TestPaths.fixture("conv2d_bn_f64.onnx")
        let model = try ModelReader.read(path: f64)
        let input = try #require(model.graph?.inputs.first)
        let dims = try #require(input.type?.tensorType?.shape?.dims.map { d -> Int in
            if case .value(let v)? = d.value { return Int(v) } else { return 1 }
        })
        let count = dims.reduce(1, *)
        try Data(NumPy.array(shape: dims, float64: rng.normals(count, standardDeviation: 1))).write(to: URL(fileURLWithPath: scratch.file("d.npy")))
        try Self.write(Self.folded(model), scratch.file("f64_fused.onnx"))
        let r = try runBnfold(["check", f64, scratch.file("f64_fused.onnx"), "--input", "\(input.name!)=" + scratch.file("d.npy")])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        // float64 data for a float input is refused, not converted.
        let mismatch = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("b.onnx"), "--input", "x=" + scratch.file("d.npy")])
        #expect(mismatch.status == 2)
    }

    @Test(arguments: [
        ("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3, 6, 6), }", "Fortran order"),
        ("{'descr': '>f4', 'fortran_order': False, 'shape': (1, 3, 6, 6), }", "big-endian"),
        ("{'descr': '<c8', 'fortran_order': False, 'shape': (1, 3, 6, 6), }", "not supported"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 6, 5), }", "data bytes"),
    ])
    func rejectedNumPyFiles(_ header: String, _ expected: String) throws {
        let scratch = ScratchDirectory()
        try Self.write(ConvTransposeBN.original(), scratch.file("a.onnx"))
        try Data(NumPy.file(header: header, data: [UInt8](repeating: 0, count: 108 * 4))).write(to: URL(fileURLWithPath: scratch.file("x.npy")))
        let r = try runBnfold(["check", scratch.file("a.onnx"), scratch.file("a.onnx"), "--input", "x=" + scratch.file("x.npy")])
        #expect(r.status == 2)
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.contains(scratch.file("x.npy") + ": "))
        #expect(r.stderr.contains(expected), "\(r.stderr)")
    }
}

/// Writes `.npy` files (format 1.0) the way NumPy does.
enum NumPy {
    static func file(header: String, data: [UInt8]) -> [UInt8] {
        var text = header
        while (10 + text.utf8.count + 1) % 64 != 0 { text += " " }
        text += "\n"
        let length = text.utf8.count
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(text.utf8) + data
    }

    static func shapeText(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }

    static func array(shape: [Int], float32 values: [Double]) -> [UInt8] {
        var data: [UInt8] = []
        for v in values { withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { data += $0 } }
        return file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText(shape)), }", data: data)
    }

    static func array(shape: [Int], float64 values: [Double]) -> [UInt8] {
        var data: [UInt8] = []
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data += $0 } }
        return file(header: "{'descr': '<f8', 'fortran_order': False, 'shape': \(shapeText(shape)), }", data: data)
    }
}

/// A serialized ONNX `TensorProto`, as in the ONNX test data's `input_0.pb`.
enum TensorProtoBytes {
    static func varint(_ value: UInt64) -> [UInt8] {
        var n = value, out: [UInt8] = []
        repeat { out.append(UInt8(n & 0x7F) | (n >= 0x80 ? 0x80 : 0)); n >>= 7 } while n > 0
        return out
    }

    static func float(name: String, dims: [Int], values: [Double]) -> [UInt8] {
        var out: [UInt8] = []
        for d in dims { out += [0x08] + varint(UInt64(d)) }          // 1: dims
        out += [0x10] + varint(1)                                       // 2: data_type FLOAT
        out += [0x42] + varint(UInt64(name.utf8.count)) + Array(name.utf8)  // 8: name
        var raw: [UInt8] = []
        for v in values { withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { raw += $0 } }
        out += [0x4A] + varint(UInt64(raw.count)) + raw                 // 9: raw_data
        return out
    }
}

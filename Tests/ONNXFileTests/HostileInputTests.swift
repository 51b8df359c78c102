import Equivalence
import Foundation
import Testing
import TestSupport
@testable import ONNXFile
import GraphPasses
import ONNXGraph
import ReferenceRuntime

/// Files built to hurt: each is a clean `ModelFileError`, never a crash or a
/// big allocation.
@Suite struct HostileInputTests {
    @Test func sha1KnownAnswers() {
        func hex(_ s: String) -> String { Array(s.utf8).withUnsafeBytes { SHA1.hex(of: $0) } }
        #expect(hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(million.withUnsafeBytes { SHA1.hex(of: $0) } == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        // Fed in odd pieces, the same answer.
        var hasher = SHA1()
        million.withUnsafeBytes { raw in
            var i = 0
            var step = 1
            while i < raw.count {
                let n = min(step, raw.count - i)
                hasher.update(UnsafeRawBufferPointer(rebasing: raw[i..<(i + n)]))
                i += n
                step = step * 3 % 1000 + 1
            }
        }
        let digest = hasher.finish().map { String(format: "%02x", $0) }.joined()
        #expect(digest == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    /// A 100-byte file claiming a huge tensor is rejected before anything is allocated.
    @Test func hugeClaimedTensorIsRejectedCheaply() throws {
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        var graph = try #require(model.graph)
        // dims 1e5 x 1e6 floats = 400 GB, with 16 bytes of data.
        graph.initializers[0].dims = [100_000, 1_000_000]
        graph.initializers[0].rawData = ByteBuffer([UInt8](repeating: 0, count: 16))
        model.graph = graph
        let scratch = ScratchDirectory()
        _ = try ModelWriter.write(model, to: scratch.file("huge.onnx"))
        let size = try FileManager.default.attributesOfItem(atPath: scratch.file("huge.onnx"))[.size] as? Int ?? 0
        #expect(size < 2000)
        #expect(throws: ModelFileError.self) { try ModelReader.read(path: scratch.file("huge.onnx")) }
        // Dimensions whose product overflows.
        graph.initializers[0].dims = [Int64.max / 2, 4]
        model.graph = graph
        _ = try ModelWriter.write(model, to: scratch.file("overflow.onnx"))
        do {
            _ = try ModelReader.read(path: scratch.file("overflow.onnx"))
            Issue.record("accepted a tensor whose size overflows")
        } catch let e as ModelFileError {
            #expect(e.problem.contains("invalid dimensions"))
        }
        // A negative dimension.
        graph.initializers[0].dims = [-1, 4]
        model.graph = graph
        _ = try ModelWriter.write(model, to: scratch.file("negative.onnx"))
        #expect(throws: ModelFileError.self) { try ModelReader.read(path: scratch.file("negative.onnx")) }
    }

    /// Builds a model with one external tensor whose data file is `data`,
    /// with extra external_data entries, in `scratch`.
    func externalModel(_ scratch: ScratchDirectory, extra: [StringPair], mutate: (inout Tensor) -> Void = { _ in })
        throws -> String {
        let model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        _ = try ModelWriter.write(model, to: scratch.file("m.onnx"))
        var written = try ModelReader.read(path: scratch.file("m.onnx"))
        var graph = try #require(written.graph)
        let i = try #require(graph.initializers.firstIndex { $0.location == .external })
        graph.initializers[i].externalData += extra
        mutate(&graph.initializers[i])
        written.graph = graph
        // Write the model message only, keeping the data file as it is: the
        // tensor stays external with the entries given.
        try ModelWriter.writeMessageAsIs(written, to: scratch.file("hostile.onnx"))
        return scratch.file("hostile.onnx")
    }

    func problem(reading path: String) -> String? {
        do { _ = try ModelReader.read(path: path); return nil } catch let e as ModelFileError { return e.problem } catch {
            return "\(error)"
        }
    }

    @Test func checksumMismatchIsRefusedAndMatchAccepted() throws {
        let scratch = ScratchDirectory()
        let bad = try externalModel(scratch, extra: [StringPair(key: "checksum", value: String(repeating: "0", count: 40))])
        let message = try #require(problem(reading: bad))
        #expect(message.contains("checksum mismatch"))
        #expect(message.hasPrefix("tensor '"))
        let data = try Data(contentsOf: URL(fileURLWithPath: scratch.file("m.onnx.data")))
        let digest = data.withUnsafeBytes { SHA1.hex(of: $0) }
        let good = try externalModel(scratch, extra: [StringPair(key: "checksum", value: digest.uppercased())])
        #expect(problem(reading: good) == nil)
    }

    /// A model whose external data carried a checksum is written with the
    /// checksum of the new data file (keep mode), so it stays verifiable.
    @Test func checksumIsRewrittenForTheNewDataFile() throws {
        let scratch = ScratchDirectory()
        // externalModel writes m.onnx.data; a model with its correct checksum:
        _ = try externalModel(scratch, extra: [])
        let written = try Data(contentsOf: URL(fileURLWithPath: scratch.file("m.onnx.data")))
        let checked = try externalModel(scratch, extra: [StringPair(key: "checksum", value: written.withUnsafeBytes { SHA1.hex(of: $0) })])
        var model = try ModelReader.read(path: checked)
        _ = try PassManager(passes: BuiltinPasses.all).run(on: &model)
        _ = try ModelWriter.write(model, to: scratch.file("folded.onnx"))
        // Reading verifies the checksum; and it is the new file's digest.
        let back = try ModelReader.read(path: scratch.file("folded.onnx"))
        let newData = try Data(contentsOf: URL(fileURLWithPath: scratch.file("folded.onnx.data")))
        let expected = newData.withUnsafeBytes { SHA1.hex(of: $0) }
        let sums = back.graph!.initializers.compactMap { t in t.externalData.first { $0.key == "checksum" }?.value }
        #expect(sums.count == 1)
        #expect(sums.allSatisfy { $0 == expected })
        #expect(newData != written)  // the fold changed the weights, so the digest had to change
    }

    @Test func externalRangesPastTheEndAreRefused() throws {
        let scratch = ScratchDirectory()
        let path = try externalModel(scratch, extra: []) { tensor in
            tensor.externalData = tensor.externalData.map { pair in
                var p = pair
                if p.key == "offset" { p.value = "999999999" }
                return p
            }
        }
        #expect(problem(reading: path)?.contains("past the end") == true)
    }

    @Test func externalTensorThatAlsoHoldsRawDataIsRefused() throws {
        let scratch = ScratchDirectory()
        let path = try externalModel(scratch, extra: []) { $0.rawData = ByteBuffer([1, 2, 3, 4]) }
        #expect(problem(reading: path)?.contains("also holds data") == true)
    }

    @Test func negativeOrGarbageOffsetsAreRefused() throws {
        let scratch = ScratchDirectory()
        for value in ["-4", "12abc", "99999999999999999999999"] {
            let path = try externalModel(scratch, extra: []) { tensor in
                tensor.externalData = tensor.externalData.map { pair in
                    var p = pair
                    if p.key == "offset" { p.value = value }
                    return p
                }
            }
            #expect(problem(reading: path)?.contains("invalid offset") == true, "\(value)")
        }
    }

    /// Inputs the fuzzer found: each must be read without crashing.
    @Test func fuzzRegressionsDoNotCrash() throws {
        let dir = TestPaths.root.appendingPathComponent("Fuzz/regressions")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        for file in files.sorted() {
            let data = try Data(contentsOf: dir.appendingPathComponent(file))
            // The same steps as the fuzz target (Fuzz/FuzzReader/FuzzReader.swift).
            data.withUnsafeBytes { raw in
                guard var model = try? ModelReader.read(bytes: raw, name: "/nonexistent/\(file)"),
                      (try? model.validate()) != nil else { return }
                let original = model
                let records = (try? PassManager(passes: BuiltinPasses.all).run(on: &model))?.records ?? []
                MemoryBudget(bytes: 256 << 20).enforce {
                    _ = FoldVerifier.verify(records, irVersion: model.irVersion, opsetImports: model.opsetImports)
                    _ = FoldVerifier.verifyWholeModel(original: original, folded: model)
                }
                _ = try? ModelWriter.packedSize(model)
            }
        }
    }
}

/// Deep nesting must be refused before anything recurses over it.
@Suite struct DeepNestingTests {
    /// Minimal protobuf writer for building hostile files by hand.
    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }
    static func field(_ number: UInt64, _ payload: [UInt8]) -> [UInt8] {
        varint(number << 3 | 2) + varint(UInt64(payload.count)) + payload
    }
    static func model(graph: [UInt8]) -> [UInt8] {
        varint(1 << 3) + varint(8) + field(7, graph)  // ir_version 8, graph
    }

    func problem(_ bytes: [UInt8]) -> String? {
        bytes.withUnsafeBytes { raw in
            do { _ = try ModelReader.read(bytes: raw, name: "deep.onnx"); return nil } catch let e as ModelFileError {
                return e.problem
            } catch { return "\(error)" }
        }
    }

    @Test func typesNestedThousandsDeepAreRefused() {
        // TypeProto { sequence_type { elem_type: TypeProto { … tensor_type { elem_type: 1 } } } }
        var type = Self.field(1, Self.varint(1 << 3) + Self.varint(1))
        for _ in 0..<5000 { type = Self.field(4, Self.field(1, type)) }
        let valueInfo = Self.field(1, Array("x".utf8)) + Self.field(2, type)
        let bytes = Self.model(graph: Self.field(13, valueInfo))
        #expect(problem(bytes)?.contains("levels deep") == true)
    }

    @Test func subgraphsNestedHundredsDeepAreRefused() {
        // Node { attribute { g: Graph { node { attribute { g: … } } } } }
        var graph: [UInt8] = []
        for _ in 0..<500 {
            let attribute = Self.field(1, Array("then_branch".utf8)) + Self.field(6, graph)
            let node = Self.field(4, Array("If".utf8)) + Self.field(5, attribute)
            graph = Self.field(1, node)
        }
        #expect(problem(Self.model(graph: graph))?.contains("levels deep") == true)
    }

    @Test func reasonableNestingIsRead() {
        var type = Self.field(1, Self.varint(1 << 3) + Self.varint(1))
        for _ in 0..<10 { type = Self.field(4, Self.field(1, type)) }
        let valueInfo = Self.field(1, Array("x".utf8)) + Self.field(2, type)
        #expect(problem(Self.model(graph: Self.field(13, valueInfo))) == nil)
    }

    /// A singular tensor field given twice is merged by protobuf (raw_data
    /// from the first copy survives); the reader must see what protobuf
    /// sees, not lose the first copy's payload — and the merged tensor then
    /// holds data in two fields, which is refused.
    @Test func repeatedSingularTensorIsMergedLikeProtobuf() throws {
        let w1 = [UInt8](repeating: 0x3F, count: 2048)  // raw_data, large enough to be left in the file
        func tensor(_ rest: [UInt8]) -> [UInt8] { Self.varint(1 << 3) + Self.varint(512) + Self.varint(2 << 3) + Self.varint(1) + rest }
        let first = tensor(Self.field(9, w1))
        // Repeated fields of merged copies concatenate, so the second copy
        // carries only its float_data.
        let second = Self.field(4, [UInt8](repeating: 0, count: 2048))  // packed float_data
        let attribute = Self.field(1, Array("value".utf8)) + Self.varint(20 << 3) + Self.varint(4)
            + Self.field(5, first) + Self.field(5, second)
        let node = Self.field(2, Array("c".utf8)) + Self.field(4, Array("Constant".utf8)) + Self.field(5, attribute)
        let bytes = Self.model(graph: Self.field(1, node) + Self.field(12, Self.field(1, Array("c".utf8))))
        do {
            _ = try ModelReader.read(contents: bytes, name: "dup.onnx")
            Issue.record("accepted a tensor with data in two fields")
        } catch let error as ModelFileError {
            #expect(error.problem == "tensor '<unnamed>' holds data in more than one field (raw_data, float_data); only one may hold it")
        }
    }
}

/// Sizes at the edge of Int: clean errors, never an arithmetic trap.
@Suite struct SizeOverflowTests {
    @Test(arguments: [
        (DataType.uint2, [Int64.max / 2]),
        (DataType.int4, [Int64.max / 2]),
        (DataType.float6e2m3, [Int64.max / 4]),
        (DataType.float, [Int64(1) << 62]),
        (DataType.double, [Int64(1) << 61, 2]),
    ])
    func hugeDimensionsAreRejected(_ type: DataType, _ dims: [Int64]) throws {
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        var graph = try #require(model.graph)
        var t = Tensor(name: "huge", elementType: type, dims: dims)
        t.rawData = ByteBuffer([1, 2, 3, 4])
        graph.initializers.append(t)
        model.graph = graph
        let scratch = ScratchDirectory()
        _ = try ModelWriter.write(model, to: scratch.file("m.onnx"))
        #expect(throws: ModelFileError.self) { try ModelReader.read(path: scratch.file("m.onnx")) }
        // The same through int32_data for the packed 4-bit types.
        if type == .int4 {
            t.rawData = nil
            t.int32Data = ByteBuffer([0, 0, 0, 0])
            graph.initializers[graph.initializers.count - 1] = t
            model.graph = graph
            _ = try ModelWriter.write(model, to: scratch.file("m2.onnx"))
            #expect(throws: ModelFileError.self) { try ModelReader.read(path: scratch.file("m2.onnx")) }
        }
    }

    @Test func byteCountNeverTraps() {
        #expect(DataType.uint2.byteCount(elements: Int.max) == nil)  // Int.max × 2 bits overflows
        #expect(DataType.uint2.byteCount(elements: Int.max / 2) == Int.max / 8 + 1)  // 2^63 − 2 bits: rounds up
        #expect(DataType.int4.byteCount(elements: Int.max / 4) == Int.max / 8 + 1)
        #expect(DataType.float.byteCount(elements: Int.max / 2) == nil)
        #expect(DataType.uint2.byteCount(elements: 3) == 1)
        #expect(DataType.float6e2m3.byteCount(elements: 4) == 3)
    }
}

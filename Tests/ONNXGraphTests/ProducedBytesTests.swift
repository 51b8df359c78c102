import Testing
@testable import ONNXGraph

/// Folded weights are produced on demand: any piece, at any offset, must
/// equal the same bytes of the whole, and the whole must equal an eager
/// Double computation rounded once.
@Suite struct ProducedBytesTests {
    static let types: [DataType] = [.float, .double, .float16, .bfloat16]

    @Test(arguments: types)
    func piecesEqualTheWhole(_ type: DataType) throws {
        let blocks = 7, blockSize = 13
        let values = (0..<(blocks * blockSize)).map { Double($0 % 17) * 0.37 - 2.5 }
        let tensor = try #require(Tensor(name: "w", elementType: type, dims: [Int64(blocks), Int64(blockSize)], values: values))
        let scale = (0..<blocks).map { 0.5 + Double($0) * 0.25 }
        let scaled = try tensor.scaledBlocks(blockSize: blockSize, scale: scale, channelOfBlock: { $0 })
        let produced = try #require(scaled.rawData)
        #expect(produced.baseAddress == nil)
        let producer = try #require(produced.producer)

        // Eager reference: widen, scale in Double, round once.
        let original = try tensor.doubles()
        let expected = (0..<original.count).map { original[$0] * scale[$0 / blockSize] }
        let reference = try #require(Tensor.encode(expected, as: type))
        #expect(produced == reference)

        // Odd offsets and lengths, including ones that split an element.
        let whole = reference.array
        for (offset, length) in [(0, 1), (1, 3), (5, 17), (whole.count - 3, 3), (2, whole.count - 2)] {
            var piece = [UInt8](repeating: 0xAA, count: length)
            piece.withUnsafeMutableBytes { producer.produce(offset: offset, into: $0) }
            #expect(piece == Array(whole[offset..<(offset + length)]), "offset \(offset), length \(length)")
        }
    }

    @Test func overflowIsFoundBeforeAnythingIsProduced() throws {
        let tensor = try #require(Tensor(name: "w", elementType: .float16, dims: [2, 3], values: [1, 2, 3, 4, 5, 600]))
        #expect(throws: UnrepresentableElement.self) {
            _ = try tensor.scaledBlocks(blockSize: 3, scale: [1, 200], channelOfBlock: { $0 })
        }
        let fine = try tensor.scaledBlocks(blockSize: 3, scale: [1, 100], channelOfBlock: { $0 })
        #expect(try fine.doubles() == [1, 2, 3, 400, 500, 60000])
    }

    @Test("A periodic layout scales like the table it stands for", arguments: types)
    func periodicLayoutEqualsTable(_ type: DataType) throws {
        // A ConvTranspose weight [C_in 4, C_out/g 3, k 2] with group 2: block (i, j)
        // is output channel (i / 2)·3 + j, i.e. period 3, repeats 2.
        let values = (0..<24).map { Double($0 % 11) * 0.31 - 1.5 }
        let tensor = try #require(Tensor(name: "w", elementType: type, dims: [4, 3, 2], values: values))
        let scale = (0..<6).map { 0.75 + Double($0) * 0.5 }
        let layout = BlockChannels(period: 3, repeats: 2)
        #expect((0..<12).map(layout.channel(ofBlock:)) == [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5])
        let periodic = try tensor.scaledBlocks(blockSize: 2, scale: scale, channels: layout)
        let table = try tensor.scaledBlocks(blockSize: 2, scale: scale, channelOfBlock: { ($0 / 6) * 3 + $0 % 3 })
        #expect(try periodic.doubles() == table.doubles())
        let whole = try #require(periodic.rawData).array
        let producer = try #require(periodic.rawData?.producer)
        var piece = [UInt8](repeating: 0, count: whole.count - 3)
        piece.withUnsafeMutableBytes { producer.produce(offset: 3, into: $0) }
        #expect(piece == Array(whole[3...]))
        // Blocks that do not fill whole runs, or channels past the scale, are refused.
        #expect(throws: TensorDataError.self) {
            _ = try tensor.scaledBlocks(blockSize: 2, scale: scale, channels: BlockChannels(period: 5, repeats: 1))
        }
        #expect(throws: TensorDataError.self) {
            _ = try tensor.scaledBlocks(blockSize: 2, scale: [1, 2], channels: layout)
        }
    }
}

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
}

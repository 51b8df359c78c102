/// Per-channel scaling of a tensor's elements: the arithmetic of every
/// weight fold (W' = W · s_c), done in one pass over the bytes.
///
/// Weights can be hundreds of megabytes. Widening them to `[Double]`,
/// scaling, and encoding again would hold three copies; this reads each
/// element from its storage, multiplies in Double, rounds once into the
/// element type and stores it into the new buffer — one new copy, no
/// intermediate arrays. Source pages that live in a memory-mapped file are
/// handed back to the kernel as they are consumed (``ReclaimableStorage``),
/// so folding a large model does not hold old and new weights at once.


/// Storage that can give back the memory of a byte range it has already
/// served, because it can re-read it on demand (a mapped file's clean pages).
public protocol ReclaimableStorage: AnyObject {
    /// Hint that bytes `offset ..< offset + length` of the buffer starting at
    /// `base` will not be needed soon. Must be safe to read them again later.
    func reclaim(base: UnsafeRawPointer, offset: Int, length: Int)
    /// Hint that the bytes are about to be read in full (map them in bulk
    /// rather than one page fault at a time).
    func prefetch(base: UnsafeRawPointer, offset: Int, length: Int)
}

/// Why a scaled element could not be stored.
public struct UnrepresentableElement: Error, Sendable {
    /// Flat index of the element.
    public let index: Int
    /// The exact (Double) result that does not fit the element type.
    public let value: Double
}

/// Which channel each block of a weight belongs to, for the layouts folds
/// meet: runs of `period × repeats` blocks, where a run uses the next
/// `period` channels and cycles through them `repeats` times.
///
/// Block b's channel is `(b / (period·repeats))·period + b % period`:
/// - `[C_out, C_in/g, k…]` scaled per output channel (Conv): blocks of
///   Πk·C_in/g, period 1, repeats 1 (``consecutive``);
/// - `[C_in, C_out/g, k…]` scaled per output channel (ConvTranspose):
///   blocks of Πk, period C_out/g, repeats C_in/g — each group's input
///   channels reuse that group's output-channel scales;
/// - `[K, N]` scaled per column (Gemm with transB = 0, MatMul): blocks of 1,
///   period N, repeats K;
/// - `[C_out, C_in/g, k…]` scaled per input channel (a forward fold into a
///   Conv): blocks of Πk, period C_in/g, repeats C_out/g.
public struct BlockChannels: Sendable, Equatable, CustomStringConvertible {
    public var period: Int
    public var repeats: Int
    public init(period: Int, repeats: Int) { self.period = period; self.repeats = repeats }

    /// Block b is channel b.
    public static let consecutive = BlockChannels(period: 1, repeats: 1)

    @inline(__always)
    public func channel(ofBlock block: Int) -> Int {
        (block / (period &* repeats)) &* period &+ block % period
    }

    public var description: String { "period \(period), repeats \(repeats)" }
}

extension Tensor {
    /// The tensor with every element of block `b` multiplied by
    /// `scale[channelOfBlock(b)]`.
    ///
    /// The elements are viewed as consecutive blocks of `blockSize`
    /// elements. For a Conv weight `[C_out, C_in/g, k...]` a block is one
    /// output channel's weights and the channel of block b is b; other
    /// layouts (ConvTranspose, transposed Gemm) map blocks to channels
    /// differently. The result keeps name, type, shape and storage location.
    ///
    /// Every product is checked now (rounding is monotonic, so it suffices
    /// that each block's largest magnitude times its scale rounds to a
    /// finite value), but the new bytes are *produced*: computed when read,
    /// piece by piece (``ByteProducer``). The writer streams them into the
    /// output without ever holding the whole new tensor in memory.
    ///
    /// - Throws: ``UnrepresentableElement`` for the first product that is
    ///   not finite or overflows the element type (float16 beyond 65504);
    ///   ``TensorDataError`` when the data cannot be read or the type is not
    ///   a floating-point type bnfold folds.
    public func scaledBlocks(blockSize: Int, scale: [Double], channelOfBlock: (Int) -> Int) throws -> Tensor {
        guard blockSize > 0, let count = elementCount, count % blockSize == 0 else {
            throw TensorDataError(tensor: name, "has \(elementCount ?? -1) elements, not a multiple of the block size \(blockSize)")
        }
        var blockScale = [Double](repeating: 0, count: count / blockSize)
        for block in blockScale.indices {
            let channel = channelOfBlock(block)
            guard channel >= 0 && channel < scale.count else {
                throw TensorDataError(tensor: name, "block \(block) maps to channel \(channel), outside 0..<\(scale.count)")
            }
            blockScale[block] = scale[channel]
        }
        return try scaledBlocks(blockSize: blockSize, scale: blockScale, channels: .consecutive)
    }

    /// The tensor with every element of block `b` multiplied by
    /// `scale[channels.channel(ofBlock: b)]`: the same as
    /// ``scaledBlocks(blockSize:scale:channelOfBlock:)`` for the periodic
    /// layouts of ``BlockChannels``, without a table of one scale per block
    /// (which for a per-element layout, blocks of 1, would be larger than
    /// the weight itself).
    public func scaledBlocks(blockSize: Int, scale: [Double], channels: BlockChannels) throws -> Tensor {
        let type = elementType
        guard type.isFoldableFloat else {
            throw TensorDataError(tensor: name, "has element type \(type); only float, double, float16 and bfloat16 can be scaled")
        }
        let source = try dataBytes()
        let count = elementCount ?? 0
        guard blockSize > 0, count % blockSize == 0 else {
            throw TensorDataError(tensor: name, "has \(count) elements, not a multiple of the block size \(blockSize)")
        }
        let blocks = count / blockSize
        guard channels.period > 0, channels.repeats > 0, blocks % (channels.period * channels.repeats) == 0,
              blocks == 0 || channels.channel(ofBlock: blocks - 1) < scale.count else {
            throw TensorDataError(tensor: name, "\(blocks) blocks do not map onto \(scale.count) channels as \(channels)")
        }
        let producer = ScaledBlocks(source: source, type: type, blockSize: blockSize, scale: scale, channels: channels)
        if let failure = producer.firstUnrepresentable() { throw failure }
        return replacingBytes(with: ByteBuffer(producedBy: producer))
    }

    /// Scales elements `first ..< first + count` by `s` and returns the
    /// first element that does not fit, if any. The loops only accumulate a
    /// flag so that the compiler can vectorize them; the rare failure is then
    /// located by a second look.
    /// Element i is written at element `i - dstFirst` of `dst`.
    static func scaleRun(type: DataType, src: UnsafeRawBufferPointer, dst: UnsafeMutableRawBufferPointer,
                         first: Int, count: Int, dstFirst: Int, by s: Double) -> UnrepresentableElement? {
        let range = first..<(first + count)
        var bad = false
        switch type {
        case .float:
            guard let from = src.baseAddress, let to = dst.baseAddress else { return nil }
            let source = { (i: Int) in Double(Float(bitPattern: UInt32(littleEndian: from.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)))) }
            var overflow: UInt32 = 0
            for i in range {
                let bits = Float(source(i) * s).bitPattern
                overflow |= (bits & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0
                to.storeBytes(of: bits.littleEndian, toByteOffset: (i &- dstFirst) &* 4, as: UInt32.self)
            }
            bad = overflow != 0
            if bad, let i = range.first(where: { !Float(source($0) * s).isFinite }) {
                return UnrepresentableElement(index: i, value: source(i) * s)
            }
        case .double:
            guard let from = src.baseAddress, let to = dst.baseAddress else { return nil }
            let source = { (i: Int) in Double(bitPattern: UInt64(littleEndian: from.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self))) }
            var overflow: UInt64 = 0
            for i in range {
                let v = source(i) * s
                overflow |= (v.bitPattern & 0x7FF0_0000_0000_0000) == 0x7FF0_0000_0000_0000 ? 1 : 0
                to.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: (i &- dstFirst) &* 8, as: UInt64.self)
            }
            bad = overflow != 0
            if bad, let i = range.first(where: { !(source($0) * s).isFinite }) {
                return UnrepresentableElement(index: i, value: source(i) * s)
            }
        case .float16:
            return scaleHalfWidth(src: src, dst: dst, range: range, dstFirst: dstFirst, by: s,
                                  decode: halfToDouble, encode: doubleToHalf, exponentMask: 0x7C00)
        case .bfloat16:
            return scaleHalfWidth(src: src, dst: dst, range: range, dstFirst: dstFirst, by: s,
                                  decode: bfloat16ToDouble, encode: doubleToBFloat16, exponentMask: 0x7F80)
        default:
            break
        }
        return nil
    }

    /// The 16-bit float types: decode exactly, scale, round once; an all-ones
    /// exponent after rounding means the value overflowed to infinity.
    private static func scaleHalfWidth(src: UnsafeRawBufferPointer, dst: UnsafeMutableRawBufferPointer,
                                       range: Range<Int>, dstFirst: Int, by s: Double, decode: (UInt16) -> Double,
                                       encode: (Double) -> UInt16, exponentMask: UInt16) -> UnrepresentableElement? {
        // Every element is written even past a failure, so that a buffer is
        // never left holding stale bytes.
        var failure: UnrepresentableElement?
        for i in range {
            let v = decode(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) * s
            let r = encode(v)
            if failure == nil, !v.isFinite || r & exponentMask == exponentMask {
                failure = UnrepresentableElement(index: i, value: v)
            }
            dst.storeBytes(of: r.littleEndian, toByteOffset: (i - dstFirst) * 2, as: UInt16.self)
        }
        return failure
    }

    /// The same tensor with new raw bytes (layout of `raw_data`); external
    /// tensors stay external (bytes held in memory until written).
    public func replacingBytes(with bytes: ByteBuffer) -> Tensor {
        var copy = self
        copy.floatData = .empty; copy.int32Data = .empty; copy.int64Data = .empty
        copy.doubleData = .empty; copy.uint64Data = .empty; copy.stringData = []
        if location == .external {
            copy.rawData = nil
            copy.externalBytes = ExternalBytes(memory: bytes)
        } else {
            copy.rawData = bytes
            copy.externalBytes = nil
        }
        return copy
    }
}

/// The bytes of a per-channel scaled tensor, computed when read.
///
/// Holds the source bytes and one scale per block; `produce` scales the
/// requested elements (rounding once, as ``Tensor/scaledBlocks(blockSize:scale:channelOfBlock:)``
/// promises) and, when the source lives in a mapped file, gives the source
/// pages it consumed back to the kernel.
final class ScaledBlocks: ByteProducer {
    let source: ByteBuffer
    let type: DataType
    let width: Int
    let blockSize: Int
    let scale: [Double]
    let channels: BlockChannels
    let blocks: Int
    let count: Int

    init(source: ByteBuffer, type: DataType, blockSize: Int, scale: [Double], channels: BlockChannels) {
        self.source = source
        self.type = type
        self.width = type.byteCount(elements: 1) ?? 1
        self.blockSize = blockSize
        self.scale = scale
        self.channels = channels
        self.count = source.count
        self.blocks = source.count / max(1, width * blockSize)
    }

    @inline(__always)
    func scale(ofBlock block: Int) -> Double { scale[channels.channel(ofBlock: block)] }

    /// The first element whose product does not round to a finite value.
    /// Rounding is monotonic in magnitude, so each block is checked through
    /// its largest magnitude; only a failing block is searched element by element.
    func firstUnrepresentable() -> UnrepresentableElement? {
        let storage = source.owner as? ReclaimableStorage
        return source.withUnsafeBytes { src -> UnrepresentableElement? in
            // In chunks of about 16 MiB: map a chunk in bulk, check it, give
            // its pages back (the writer maps them again when it produces the
            // bytes), so that checking a 2 GB model does not hold 2 GB.
            let blocksPerChunk = max(1, (16 << 20) / max(1, blockSize * width))
            var block = 0
            while block < blocks {
                let end = min(blocks, block + blocksPerChunk)
                let (start, length) = (block * blockSize * width, (end - block) * blockSize * width)
                if let storage, let base = src.baseAddress { storage.prefetch(base: base, offset: start, length: length) }
                for b in block..<end {
                    if let bad = check(block: b, src) { return bad }
                }
                if let storage, let base = src.baseAddress { storage.reclaim(base: base, offset: start, length: length) }
                block = end
            }
            return nil
        }
    }

    /// Checks one block through its largest magnitude; only a failing block
    /// is searched element by element.
    private func check(block: Int, _ src: UnsafeRawBufferPointer) -> UnrepresentableElement? {
        let s = scale(ofBlock: block)
        let first = block * blockSize
        let (largest, allFinite) = largestMagnitude(src, first: first, count: blockSize)
        guard !allFinite || !s.isFinite || !type.roundsToFinite(largest * s.magnitude) else { return nil }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize * width, alignment: 16)
        defer { scratch.deallocate() }
        if let bad = Tensor.scaleRun(type: type, src: src, dst: scratch, first: first, count: blockSize,
                                     dstFirst: first, by: s) {
            return bad
        }
        // A non-finite scale with no element to blame: report the first.
        return UnrepresentableElement(index: first, value: .nan)
    }

    /// Largest |x| over elements `first ..< first + count`, and whether all
    /// were finite. For non-negative IEEE values the bit patterns sort like
    /// the magnitudes, and infinity/NaN have the largest patterns, so one
    /// integer maximum (which vectorizes) answers both questions.
    private func largestMagnitude(_ buffer: UnsafeRawBufferPointer, first: Int, count: Int) -> (Double, Bool) {
        guard count > 0, let src = buffer.baseAddress else { return (0, true) }
        switch type {
        case .float:
            var top: UInt32 = 0
            for i in first..<(first + count) {
                top = max(top, UInt32(littleEndian: src.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)) & 0x7FFF_FFFF)
            }
            return (Double(Float(bitPattern: top)), top < 0x7F80_0000)
        case .double:
            var top: UInt64 = 0
            for i in first..<(first + count) {
                top = max(top, UInt64(littleEndian: src.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)) & 0x7FFF_FFFF_FFFF_FFFF)
            }
            return (Double(bitPattern: top), top < 0x7FF0_0000_0000_0000)
        case .float16, .bfloat16:
            var top: UInt16 = 0
            for i in first..<(first + count) {
                top = max(top, UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self)) & 0x7FFF)
            }
            return type == .float16 ? (halfToDouble(top), top < 0x7C00) : (bfloat16ToDouble(top), top < 0x7F80)
        default:
            return (0, false)
        }
    }

    func produce(offset: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count > 0 else { return }
        // Whole elements covering the request.
        let firstElement = offset / width
        let lastElement = (offset + buffer.count + width - 1) / width
        let aligned = offset % width == 0 && buffer.count % width == 0
        let target = aligned ? buffer
            : UnsafeMutableRawBufferPointer.allocate(byteCount: (lastElement - firstElement) * width, alignment: 16)
        defer {
            if !aligned {
                let skip = offset - firstElement * width
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: target[skip..<(skip + buffer.count)]))
                target.deallocate()
            }
        }
        source.withUnsafeBytes { src in
            let storage = source.owner as? ReclaimableStorage
            if let storage, let base = src.baseAddress {
                storage.prefetch(base: base, offset: firstElement * width, length: (lastElement - firstElement) * width)
            }
            var element = firstElement
            while element < lastElement {
                let block = element / blockSize
                let runEnd = min(lastElement, (block + 1) * blockSize)
                _ = Tensor.scaleRun(type: type, src: src, dst: target, first: element, count: runEnd - element,
                                    dstFirst: firstElement, by: scale(ofBlock: block))
                element = runEnd
            }
            if let storage, let base = src.baseAddress {
                storage.reclaim(base: base, offset: firstElement * width, length: (lastElement - firstElement) * width)
            }
        }
    }
}

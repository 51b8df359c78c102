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

import Dispatch
import Foundation

/// Keeps the lowest-index failure reported by concurrent chunks.
private final class FirstFailure: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var first: UnrepresentableElement?
    func record(_ failure: UnrepresentableElement) {
        lock.lock()
        if first == nil || failure.index < first!.index { first = failure }
        lock.unlock()
    }
}

/// What the concurrent chunks share: disjoint ranges of `dst` are written,
/// `src` is only read, and the reclaimer is called for disjoint ranges.
private struct ScaleJob: @unchecked Sendable {
    let src: UnsafeRawBufferPointer
    let dst: UnsafeMutableRawBufferPointer
    let reclaimer: ReclaimableStorage?
}

/// Storage that can give back the memory of a byte range it has already
/// served, because it can re-read it on demand (a mapped file's clean pages).
public protocol ReclaimableStorage: AnyObject {
    /// Hint that bytes `offset ..< offset + length` of the buffer starting at
    /// `base` will not be needed soon. Must be safe to read them again later.
    func reclaim(base: UnsafeRawPointer, offset: Int, length: Int)
}

/// Why a scaled element could not be stored.
public struct UnrepresentableElement: Error, Sendable {
    /// Flat index of the element.
    public let index: Int
    /// The exact (Double) result that does not fit the element type.
    public let value: Double
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
    /// - Throws: ``UnrepresentableElement`` for the first product that is
    ///   not finite or overflows the element type (float16 beyond 65504);
    ///   ``TensorDataError`` when the data cannot be read or the type is not
    ///   a floating-point type bnfold folds.
    public func scaledBlocks(blockSize: Int, scale: [Double], channelOfBlock: (Int) -> Int) throws -> Tensor {
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
        let width = type.byteCount(elements: 1)!
        var blockScale = [Double](repeating: 0, count: blocks)
        for block in 0..<blocks {
            let channel = channelOfBlock(block)
            guard channel >= 0 && channel < scale.count else {
                throw TensorDataError(tensor: name, "block \(block) maps to channel \(channel), outside 0..<\(scale.count)")
            }
            blockScale[block] = scale[channel]
        }
        let scaleOfBlock = blockScale
        let reclaimer = source.owner as? ReclaimableStorage
        // Large tensors are cut into chunks of whole blocks, about 4 MiB each,
        // scaled on all cores; each chunk's source pages are given back when done.
        let blocksPerChunk = max(1, (4 << 20) / max(1, blockSize * width))
        let chunks = (blocks + blocksPerChunk - 1) / blocksPerChunk
        let result = try source.withUnsafeBytes { src -> ByteBuffer in
            try ByteBuffer.make(count: src.count) { dst in
                let job = ScaleJob(src: src, dst: dst, reclaimer: reclaimer)
                let failures = FirstFailure()
                let work = { @Sendable (chunk: Int) in
                    let (src, dst, reclaimer) = (job.src, job.dst, job.reclaimer)
                    let firstBlock = chunk * blocksPerChunk
                    let lastBlock = min(blocks, firstBlock + blocksPerChunk)
                    for block in firstBlock..<lastBlock {
                        let s = scaleOfBlock[block]
                        if let bad = Self.scaleRun(type: type, src: src, dst: dst, first: block * blockSize,
                                                   count: blockSize, by: s) {
                            failures.record(bad)
                            return
                        }
                    }
                    if let reclaimer {
                        let start = firstBlock * blockSize * width
                        reclaimer.reclaim(base: src.baseAddress!, offset: start, length: lastBlock * blockSize * width - start)
                    }
                }
                if chunks > 1 {
                    DispatchQueue.concurrentPerform(iterations: chunks, execute: work)
                } else if chunks == 1 {
                    work(0)
                }
                if let first = failures.first { throw first }
            }
        }
        return replacingBytes(with: result)
    }

    /// Scales elements `first ..< first + count` by `s` and returns the
    /// first element that does not fit, if any. The loops only accumulate a
    /// flag so that the compiler can vectorize them; the rare failure is then
    /// located by a second look.
    private static func scaleRun(type: DataType, src: UnsafeRawBufferPointer, dst: UnsafeMutableRawBufferPointer,
                                 first: Int, count: Int, by s: Double) -> UnrepresentableElement? {
        let range = first..<(first + count)
        var bad = false
        switch type {
        case .float:
            let source = { (i: Int) in Double(Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))) }
            var overflow: UInt32 = 0
            for i in range {
                let r = Float(source(i) * s)
                overflow |= (r.bitPattern & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0
                dst.storeBytes(of: r.bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self)
            }
            bad = overflow != 0
            if bad, let i = range.first(where: { !Float(source($0) * s).isFinite }) {
                return UnrepresentableElement(index: i, value: source(i) * s)
            }
        case .double:
            let source = { (i: Int) in Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))) }
            for i in range {
                let v = source(i) * s
                bad = bad || !v.isFinite
                dst.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: i * 8, as: UInt64.self)
            }
            if bad, let i = range.first(where: { !(source($0) * s).isFinite }) {
                return UnrepresentableElement(index: i, value: source(i) * s)
            }
        case .float16:
            return scaleHalfWidth(src: src, dst: dst, range: range, by: s,
                                  decode: halfToDouble, encode: doubleToHalf, exponentMask: 0x7C00)
        case .bfloat16:
            return scaleHalfWidth(src: src, dst: dst, range: range, by: s,
                                  decode: bfloat16ToDouble, encode: doubleToBFloat16, exponentMask: 0x7F80)
        default:
            break
        }
        return nil
    }

    /// The 16-bit float types: decode exactly, scale, round once; an all-ones
    /// exponent after rounding means the value overflowed to infinity.
    private static func scaleHalfWidth(src: UnsafeRawBufferPointer, dst: UnsafeMutableRawBufferPointer,
                                       range: Range<Int>, by s: Double, decode: (UInt16) -> Double,
                                       encode: (Double) -> UInt16, exponentMask: UInt16) -> UnrepresentableElement? {
        for i in range {
            let v = decode(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) * s
            let r = encode(v)
            if !v.isFinite || r & exponentMask == exponentMask { return UnrepresentableElement(index: i, value: v) }
            dst.storeBytes(of: r.littleEndian, toByteOffset: i * 2, as: UInt16.self)
        }
        return nil
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

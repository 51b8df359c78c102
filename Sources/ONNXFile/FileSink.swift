#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CONNX
import ONNXGraph

/// Buffered writing to a file descriptor, and the `ProtobufCBuffer` that lets
/// protobuf-c's `pack_to_buffer` stream a message into it.
///
/// protobuf-c calls `append` with many 1–5 byte pieces (tags, lengths) and
/// with whole tensor payloads: small pieces are gathered in a 1 MiB buffer,
/// large ones are written straight from their memory.
final class FileSink {
    let fd: Int32
    let displayName: String
    private(set) var written = 0
    private var buffer: UnsafeMutableRawPointer
    private var used = 0
    private let capacity = 1 << 20
    /// First write error (errno); once set, further writes are skipped.
    private var failure: Int32 = 0
    /// When set, every byte written is also hashed (for external data
    /// `checksum` entries).
    var hasher: SHA1?

    init(fd: Int32, displayName: String) {
        self.fd = fd
        self.displayName = displayName
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit { buffer.deallocate() }

    func append(_ data: UnsafeRawPointer, _ count: Int) {
        guard failure == 0, count > 0 else { return }
        if let produced = ProducedRegions.locate(data, count: count) {
            stream(produced.producer, offset: produced.offset, count: count)
            return
        }
        hasher?.update(UnsafeRawBufferPointer(start: data, count: count))
        if count >= FileSink.kernelCopyMinimum, let source = MappedFiles.locate(data, count: count) {
            // Unchanged bytes of a mapped input file: copy them in the kernel,
            // page cache to page cache, without faulting the mapping in.
            flushBuffer()
            if copyFromFile(source.fd, offset: source.offset, count: count) {
                written += count
                startWriteback()
                return
            }
        }
        if used + count <= capacity {
            memcpy(buffer + used, data, count)
            used += count
            written += count
            return
        }
        flushBuffer()
        if count >= capacity / 2 {
            writeAll(data, count)
        } else {
            memcpy(buffer, data, count)
            used = count
        }
        written += count
    }

    private func flushBuffer() {
        if used > 0 { writeAll(buffer, used) }
        used = 0
    }

    /// Payloads at least this large that lie in a mapped file are copied with copy_file_range.
    static let kernelCopyMinimum = 1 << 16
    /// Writeback of the output is started every this many bytes, so that the
    /// final fsync finds most of the file already on its way to disk.
    static let writebackChunk = 8 << 20
    private var writebackStart = 0
    /// Bytes handed to the kernel so far (written minus what is still buffered).
    private var flushed = 0

    /// copy_file_range until done; false (nothing copied) if the kernel
    /// cannot do it for these files, so the caller writes from memory instead.
    private func copyFromFile(_ source: Int32, offset: Int, count: Int) -> Bool {
        guard let copyFileRange = Syscalls.copyFileRange else { return false }
        var inOffset = Int64(offset)
        var done = 0
        while done < count {
            let n = copyFileRange(source, &inOffset, fd, nil, count - done, 0)
            if n < 0 {
                if errno == EINTR { continue }
                if done == 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
                    return false
                }
                failure = errno
                return true
            }
            if n == 0 { failure = EIO; return true }
            done += n
        }
        flushed += count
        return true
    }

    /// Asks the kernel to start writing back what has been written since the
    /// last call, once a chunk has accumulated (does not wait).
    private func startWriteback() {
        guard flushed - writebackStart >= FileSink.writebackChunk, let syncFileRange = Syscalls.syncFileRange else { return }
        _ = syncFileRange(fd, Int64(writebackStart), Int64(flushed - writebackStart), 2 /* SYNC_FILE_RANGE_WRITE */)
        writebackStart = flushed
    }

    private func writeAll(_ data: UnsafeRawPointer, _ count: Int) {
        var done = 0
        while done < count && failure == 0 {
            let n = Glibc.write(fd, data + done, count - done)
            if n < 0 {
                if errno == EINTR { continue }
                failure = errno
            } else if n == 0 {
                failure = EIO
            } else {
                done += n
            }
        }
        flushed += done
        startWriteback()
    }

    func write(_ bytes: ByteBuffer) throws {
        if bytes.baseAddress == nil, bytes.count > 0, let producer = bytes.producer {
            stream(producer, offset: 0, count: bytes.count)
        } else {
            bytes.withUnsafeBytes { if let base = $0.baseAddress { append(base, $0.count) } }
        }
        try check()
    }

    /// Computes produced bytes a buffer-load at a time and writes them.
    private func stream(_ producer: any ByteProducer, offset: Int, count: Int) {
        flushBuffer()
        var done = 0
        while done < count && failure == 0 {
            let n = min(capacity, count - done)
            producer.produce(offset: offset + done, into: UnsafeMutableRawBufferPointer(start: buffer, count: n))
            hasher?.update(UnsafeRawBufferPointer(start: buffer, count: n))
            writeAll(buffer, n)
            done += n
        }
        written += count
    }

    /// Writes zero bytes up to `offset`.
    func pad(to offset: Int) throws {
        var zeros = [UInt8](repeating: 0, count: 64)
        while written < offset {
            let n = min(offset - written, zeros.count)
            zeros.withUnsafeMutableBytes { append($0.baseAddress!, n) }
        }
        try check()
    }

    /// Appends `value` as a protobuf varint (a tag or a length).
    func appendVarint(_ value: UInt64) {
        var bytes: (UInt64, UInt64) = (0, 0)
        let n = withUnsafeMutableBytes(of: &bytes) { out -> Int in
            var v = value, i = 0
            while v >= 0x80 { out[i] = UInt8(v & 0x7F) | 0x80; v >>= 7; i += 1 }
            out[i] = UInt8(v)
            return i + 1
        }
        withUnsafeBytes(of: &bytes) { append($0.baseAddress!, n) }
    }

    /// Streams a packed message: `packTo` is the message's
    /// `…__pack_to_buffer` applied to the buffer it is given.
    func pack(_ packTo: (UnsafeMutablePointer<ProtobufCBuffer>) -> Int) throws {
        // A ProtobufCBuffer followed by a pointer to this sink: protobuf-c
        // passes the buffer pointer back to `append`, which finds the sink
        // right after it (callbacks from C cannot capture context).
        let headerSize = MemoryLayout<ProtobufCBuffer>.stride
        let block = UnsafeMutableRawPointer.allocate(byteCount: headerSize + MemoryLayout<UnsafeRawPointer>.stride,
                                                     alignment: 16)
        defer { block.deallocate() }
        let appendFunction: @convention(c) (UnsafeMutablePointer<ProtobufCBuffer>?, Int, UnsafePointer<UInt8>?) -> Void = {
            buffer, length, data in
            guard let buffer, let data else { return }
            let context = UnsafeRawPointer(buffer).load(fromByteOffset: MemoryLayout<ProtobufCBuffer>.stride,
                                                        as: UnsafeRawPointer.self)
            Unmanaged<FileSink>.fromOpaque(context).takeUnretainedValue().append(UnsafeRawPointer(data), length)
        }
        block.initializeMemory(as: ProtobufCBuffer.self, repeating: ProtobufCBuffer(append: appendFunction), count: 1)
        block.storeBytes(of: UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque()), toByteOffset: headerSize,
                         as: UnsafeRawPointer.self)
        _ = withExtendedLifetime(self) {
            packTo(block.assumingMemoryBound(to: ProtobufCBuffer.self))
        }
        try check()
    }

    /// Flushes, fsyncs and reports any write error.
    func finish() throws {
        flushBuffer()
        try check()
        if fsync(fd) != 0 && errno != EINVAL && errno != EROFS { failure = errno }
        try check()
    }

    private func check() throws {
        guard failure != 0 else { return }
        let reason = failure == ENOSPC ? "no space left on the device"
            : failure == EFBIG ? "file too large (a file size limit was hit)"
            : String(cString: strerror(failure))
        throw ModelFileError(file: displayName, "cannot write: \(reason)")
    }
}

/// Linux system calls that Swift's Glibc module does not declare, looked up
/// at run time; nil where the C library does not have them (the writer then
/// does without).
enum Syscalls {
    typealias CopyFileRange = @convention(c) (Int32, UnsafeMutablePointer<Int64>?, Int32, UnsafeMutablePointer<Int64>?, Int, UInt32) -> Int
    typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32

    static let copyFileRange: CopyFileRange? = lookup("copy_file_range")
    static let syncFileRange: SyncFileRange? = lookup("sync_file_range")

    private static func lookup<F>(_ name: String) -> F? {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(symbol, to: F.self)
    }
}

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

    init(fd: Int32, displayName: String) {
        self.fd = fd
        self.displayName = displayName
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit { buffer.deallocate() }

    func append(_ data: UnsafeRawPointer, _ count: Int) {
        guard failure == 0, count > 0 else { return }
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
    }

    func write(_ bytes: ByteBuffer) throws {
        bytes.withUnsafeBytes { if let base = $0.baseAddress { append(base, $0.count) } }
        try check()
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

    /// Streams a packed message.
    func pack(_ message: UnsafeMutablePointer<Onnx__ModelProto>) throws {
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
            onnx__model_proto__pack_to_buffer(message, block.assumingMemoryBound(to: ProtobufCBuffer.self))
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

import Foundation

/// Names as the bytes they are.
///
/// ONNX declares names, op types, domains and doc strings as protobuf
/// `string`s, but nothing stops a file from holding any bytes there: invalid
/// UTF-8, overlong encodings, encoded surrogates, NULs. The IR keeps these
/// fields as Swift `String`s (passes compare, hash and build names), so the
/// reader needs a mapping from bytes to `String` that loses nothing:
///
/// - **Valid UTF-8 is the same `String`.** An ordinary name — NUL included,
///   as U+0000 — reads exactly as it is spelled.
/// - **Every other byte becomes a reserved scalar.** A byte `b` that does not
///   start a valid UTF-8 sequence is U+10FF00 + `b` (Supplementary Private
///   Use Area-B, which no ONNX name has a reason to use). Repairing such bytes
///   to U+FFFD instead would make two distinct names equal, and a valid model
///   would be refused as defining a value twice.
/// - **The reserved scalars themselves are escaped.** The UTF-8 of a genuine
///   U+10FF00…U+10FFFF in the file is taken as four raw bytes, each mapped
///   as above, so no byte string can produce what another one does.
///
/// So `String(protoBytes: b).protoBytes == b` for every `b`, and distinct byte
/// strings give strings with distinct scalars. The writer turns names back
/// into bytes with ``Swift/String/protoBytes``, so a read + write round trip
/// keeps every name byte for byte. Human-readable output shows a reserved
/// scalar as the byte it stands for (`\xff`, see
/// ``Swift/String/escapedForTerminal``).
///
/// - **Text not in NFC is taken as raw bytes.** Swift's `==` compares
///   strings by canonical equivalence, so precomposed "é" and "e" + U+0301
///   would be equal `String`s; a name whose decoded text is not in
///   Normalization Form C keeps its ASCII and has every other byte mapped
///   to a reserved scalar instead (printed as `\xNN`), so distinct bytes
///   stay distinct names.
public enum ProtoBytes {
    /// The first of the 256 reserved scalars: raw byte `b` is `rawByteBase + b`.
    public static let rawByteBase: UInt32 = 0x10FF00

    /// The raw byte `scalar` stands for, or nil when it is an ordinary scalar.
    @inlinable
    public static func rawByte(_ scalar: Unicode.Scalar) -> UInt8? {
        scalar.value >= rawByteBase ? UInt8(truncatingIfNeeded: scalar.value - rawByteBase) : nil
    }

    /// The reserved scalar standing for raw byte `byte`.
    public static func scalar(forRawByte byte: UInt8) -> Unicode.Scalar {
        Unicode.Scalar(rawByteBase + UInt32(byte))!
    }

    /// The length of the valid UTF-8 sequence at the start of `bytes[i...]`
    /// and its scalar value, or nil when the bytes there are not valid UTF-8
    /// (overlong forms, surrogates and values past U+10FFFF are invalid).
    static func decodeScalar(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int) -> (length: Int, value: UInt32)? {
        let b0 = bytes[i]
        if b0 < 0x80 { return (1, UInt32(b0)) }
        let length: Int
        var range: ClosedRange<UInt8> = 0x80...0xBF  // allowed second byte
        switch b0 {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; range = 0xA0...0xBF
        case 0xED: length = 3; range = 0x80...0x9F
        case 0xE1...0xEF: length = 3
        case 0xF0: length = 4; range = 0x90...0xBF
        case 0xF4: length = 4; range = 0x80...0x8F
        case 0xF1...0xF3: length = 4
        default: return nil
        }
        guard i + length <= bytes.count, range.contains(bytes[i + 1]) else { return nil }
        var value = UInt32(b0) & (length == 2 ? 0x1F : length == 3 ? 0x0F : 0x07)
        for k in 1..<length {
            let b = bytes[i + k]
            guard b & 0xC0 == 0x80 else { return nil }
            value = value << 6 | UInt32(b & 0x3F)
        }
        return (length, value)
    }

    /// Whether valid UTF-8 `bytes` encode one of the reserved scalars
    /// (their UTF-8 is F4 8F BC..BF xx).
    static func containsReserved(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard bytes.count >= 4 else { return false }
        for i in 0..<(bytes.count - 3) where bytes[i] == 0xF4 && bytes[i + 1] == 0x8F && bytes[i + 2] >= 0xBC {
            return true
        }
        return false
    }

    static func string(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        // Fast path: most names are ASCII, which no normalization changes.
        if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        let text = decoded(bytes)
        // Swift's `==` is canonical equivalence: "é" and "e" + U+0301 are
        // equal Strings though their bytes differ. A string already in NFC is
        // equivalent only to itself (the reserved scalars are inert: private
        // use, combining class 0, no decomposition), so text stays text only
        // when it is in NFC; otherwise every byte past ASCII is taken as raw
        // (ASCII stays: with no combining mark left, the result is in NFC).
        if text.unicodeScalars.elementsEqual(text.precomposedStringWithCanonicalMapping.unicodeScalars) { return text }
        var raw = String.UnicodeScalarView()
        for b in bytes { raw.append(b < 0x80 ? Unicode.Scalar(b) : scalar(forRawByte: b)) }
        return String(raw)
    }

    private static func decoded(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        if !containsReserved(bytes), let valid = String(validating: bytes, as: UTF8.self) {
            return valid
        }
        var scalars = String.UnicodeScalarView()
        var i = 0
        while i < bytes.count {
            if let (length, value) = decodeScalar(bytes, at: i), value < rawByteBase {
                scalars.append(Unicode.Scalar(value)!)
                i += length
            } else {
                scalars.append(scalar(forRawByte: bytes[i]))
                i += 1
            }
        }
        return String(scalars)
    }
}

extension String {
    /// The string standing for `bytes` (see ``ProtoBytes``): the same text
    /// when `bytes` are valid UTF-8, reserved scalars for the bytes that are
    /// not. `String(protoBytes: b).protoBytes == b` for every `b`.
    public init<Bytes: Collection>(protoBytes bytes: Bytes) where Bytes.Element == UInt8 {
        if let s = bytes.withContiguousStorageIfAvailable(ProtoBytes.string) {
            self = s
        } else {
            self = Array(bytes).withUnsafeBufferPointer(ProtoBytes.string)
        }
    }

    /// The bytes this string stands for (see ``ProtoBytes``): its UTF-8, with
    /// each reserved scalar U+10FF00 + `b` written as the single byte `b`.
    public var protoBytes: [UInt8] {
        guard unicodeScalars.contains(where: { $0.value >= ProtoBytes.rawByteBase }) else { return Array(utf8) }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        for scalar in unicodeScalars {
            if let byte = ProtoBytes.rawByte(scalar) {
                out.append(byte)
            } else {
                out.append(contentsOf: String(scalar).utf8)
            }
        }
        return out
    }
}

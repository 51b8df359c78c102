import Foundation
import Testing
import ONNXGraph
import TestSupport

/// `String(protoBytes:)` / `.protoBytes`: names kept as the bytes they are.
@Suite("Proto bytes")
struct ProtoBytesTests {
    /// Byte strings that are easy to get wrong, each on its own and in the random mixes below.
    static let awkward: [[UInt8]] = [
        [],
        [0x00],                                  // NUL
        Array("a\0b".utf8),
        [0x80], [0xBF], [0xC0], [0xC1], [0xF5], [0xFE], [0xFF],
        [0xC0, 0x80],                            // overlong NUL
        [0xC1, 0xBF],                            // overlong U+007F
        [0xE0, 0x80, 0xAF],                      // overlong '/'
        [0xF0, 0x80, 0x80, 0x80],                // overlong 4-byte
        [0xED, 0xA0, 0x80],                      // U+D800 (a surrogate) as UTF-8
        [0xED, 0xBF, 0xBF],                      // U+DFFF
        [0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80],    // a CESU-8 surrogate pair
        [0xF4, 0x90, 0x80, 0x80],                // U+110000: past the last scalar
        [0xE2, 0x82],                            // truncated sequence
        [0xF0, 0x9F, 0x98],                      // truncated emoji
        [0xF4, 0x8F, 0xBC, 0x80],                // U+10FF00: the first reserved scalar's own UTF-8
        [0xF4, 0x8F, 0xBF, 0xBF],                // U+10FFFF: the last
        [0xF4, 0x8F, 0xBD, 0x81],                // U+10FF41, which stands for raw 'A'
        [0xF4, 0x8F, 0xBB, 0xBF],                // U+10FEFF: not reserved, valid
        Array("Conv_0/weight".utf8),
        Array("é日本🙂".utf8),
    ]

    /// Random byte strings biased towards the interesting bytes.
    static func randomBytes(_ rng: inout SeededGenerator) -> [UInt8] {
        let pieces: [[UInt8]] = awkward + [[0x41], [0x7F], [0x1B], [0xF4], [0x8F], [0xBC], [0xBF]]
        var out: [UInt8] = []
        for _ in 0..<Int.random(in: 0...12, using: &rng) {
            if Bool.random(using: &rng) {
                out += pieces.randomElement(using: &rng)!
            } else {
                out.append(UInt8.random(in: 0...255, using: &rng))
            }
        }
        return out
    }

    @Test("Every awkward byte string round-trips exactly", arguments: awkward)
    func awkwardRoundTrip(_ bytes: [UInt8]) {
        #expect(String(protoBytes: bytes).protoBytes == bytes)
    }

    @Test("Random byte strings round-trip exactly and map injectively")
    func randomRoundTripAndInjectivity() {
        var rng = SeededGenerator(seed: 9)
        var seen: [[Unicode.Scalar]: [UInt8]] = [:]
        for _ in 0..<20_000 {
            let bytes = Self.randomBytes(&rng)
            let s = String(protoBytes: bytes)
            #expect(s.protoBytes == bytes)
            let scalars = Array(s.unicodeScalars)
            if let other = seen[scalars] { #expect(other == bytes, "\(other) and \(bytes) map to the same string") }
            seen[scalars] = bytes
        }
        #expect(seen.count > 10_000)
    }

    @Test("All one- and two-byte strings round-trip and are distinct")
    func exhaustiveShort() {
        var strings: Set<[Unicode.Scalar]> = []
        for a in 0...255 {
            let one = [UInt8(a)]
            #expect(String(protoBytes: one).protoBytes == one)
            strings.insert(Array(String(protoBytes: one).unicodeScalars))
            for b in 0...255 {
                let two = [UInt8(a), UInt8(b)]
                let s = String(protoBytes: two)
                if s.protoBytes != two { Issue.record("\(two) does not round-trip"); return }
                strings.insert(Array(s.unicodeScalars))
            }
        }
        #expect(strings.count == 256 + 256 * 256)
    }

    @Test("Valid UTF-8 without reserved scalars is the same String")
    func validUnchanged() {
        for text in ["", "x", "a\0b", "Conv_0/weight", "é", "日本", "🙂", "\u{10FEFF}", "\u{FFFD}", "\u{1B}]0;t\u{07}"] {
            let s = String(protoBytes: Array(text.utf8))
            #expect(Array(s.unicodeScalars) == Array(text.unicodeScalars))
            #expect(text.protoBytes == Array(text.utf8))
        }
        var rng = SeededGenerator(seed: 90)
        for _ in 0..<2_000 {
            // Random scalars below the reserved range, surrogates excluded.
            let scalars = (0..<Int.random(in: 0...8, using: &rng)).compactMap { _ in
                Unicode.Scalar(UInt32.random(in: 0..<ProtoBytes.rawByteBase, using: &rng))
            }
            let text = String(String.UnicodeScalarView(scalars))
            let read = String(protoBytes: Array(text.utf8))
            #expect(read.protoBytes == Array(text.utf8))
            if Array(text.precomposedStringWithCanonicalMapping.unicodeScalars) == scalars {
                #expect(Array(read.unicodeScalars) == scalars)   // text in NFC stays text
            } else {
                #expect(read.unicodeScalars.allSatisfy { $0.isASCII || ProtoBytes.rawByte($0) != nil })   // otherwise raw bytes
            }
        }
    }

    @Test("Canonically equivalent but distinct names stay distinct (Swift's == would equate them)")
    func canonicalEquivalentsStayDistinct() {
        let composed = Array("caf\u{E9}".utf8), decomposed = Array("cafe\u{301}".utf8)
        #expect("caf\u{E9}" == "cafe\u{301}")   // why this test exists
        let a = String(protoBytes: composed), b = String(protoBytes: decomposed)
        #expect(a != b)
        #expect(a == "caf\u{E9}")
        #expect(a.protoBytes == composed)
        #expect(b.protoBytes == decomposed)
        #expect(Set([a, b]).count == 2)
        #expect(b.escapedForTerminal == "cafe\\xcc\\x81")
    }

    @Test("Invalid bytes become the reserved scalar of the byte")
    func invalidBytesAreReservedScalars() {
        #expect(Array(String(protoBytes: [0x61, 0xFF, 0x62]).unicodeScalars)
                == ["a", Unicode.Scalar(0x10FFFF)!, "b"])
        // Two names differing only in an invalid byte stay different (they were both U+FFFD once).
        #expect(String(protoBytes: [0x77, 0xFF]) != String(protoBytes: [0x77, 0xFE]))
        // A genuine reserved scalar is escaped as its four bytes.
        #expect(Array(String(protoBytes: [0xF4, 0x8F, 0xBC, 0x80]).unicodeScalars)
                == [0xF4, 0x8F, 0xBC, 0x80].map(ProtoBytes.scalar(forRawByte:)))
        #expect(ProtoBytes.rawByte(Unicode.Scalar(0x10FF1B)!) == 0x1B)
        #expect(ProtoBytes.rawByte("a") == nil)
        // A NUL is kept, not a terminator.
        #expect(String(protoBytes: [0x61, 0x00, 0x62]).unicodeScalars.count == 3)
    }
}

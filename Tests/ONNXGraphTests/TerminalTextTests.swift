import Testing
import ONNXGraph

/// `escapedForTerminal`: what bnfold prints of a model's text.
@Suite("Terminal text")
struct TerminalTextTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let input: String
        let expected: String
        var testDescription: String { expected }
    }

    static let cases: [Case] = [
        Case(input: "", expected: ""),
        Case(input: "Conv_0/weight", expected: "Conv_0/weight"),
        Case(input: "é 日本 🙂 ×", expected: "é 日本 🙂 ×"),
        Case(input: "a\\b", expected: "a\\\\b"),
        Case(input: "a\nb\tc\rd", expected: "a\\nb\\tc\\rd"),
        Case(input: "\0\u{01}\u{07}\u{08}\u{0B}\u{0C}\u{1B}\u{1F}\u{7F}", expected: "\\x00\\x01\\x07\\x08\\x0b\\x0c\\x1b\\x1f\\x7f"),
        Case(input: "\u{1B}]0;pwned\u{07}", expected: "\\x1b]0;pwned\\x07"),
        Case(input: "\u{1B}[2J\u{1B}[H", expected: "\\x1b[2J\\x1b[H"),
        Case(input: "a\n/x: forged line\u{1B}]0;pwned\u{07}", expected: "a\\n/x: forged line\\x1b]0;pwned\\x07"),
        Case(input: "\u{80}\u{85}\u{9B}\u{9F}\u{A0}", expected: "\\u{80}\\u{85}\\u{9b}\\u{9f}\u{A0}"),
        Case(input: "x\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}y", expected: "x\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}y"),
        Case(input: "\u{2066}\u{2067}\u{2068}\u{2069}", expected: "\\u{2066}\\u{2067}\\u{2068}\\u{2069}"),
        Case(input: "l1\u{2028}l2\u{2029}", expected: "l1\\u{2028}l2\\u{2029}"),
        // Raw bytes of the file (ProtoBytes' reserved scalars) show as the byte.
        Case(input: String(protoBytes: [0x77, 0xFF]), expected: "w\\xff"),
        Case(input: String(protoBytes: [0xC0, 0x80, 0x41]), expected: "\\xc0\\x80A"),
        Case(input: String(protoBytes: [0xF4, 0x8F, 0xBC, 0x80]), expected: "\\xf4\\x8f\\xbc\\x80"),
        Case(input: String(protoBytes: [0x1B, 0xFE, 0x0A]), expected: "\\x1b\\xfe\\n"),
    ]

    @Test(arguments: cases)
    func escapes(_ c: Case) {
        #expect(c.input.escapedForTerminal == c.expected)
    }

    @Test("The result has no control or invisible-reordering characters")
    func noControlsLeft() {
        var all = String.UnicodeScalarView()
        for v in UInt32(0)...0x3000 { if let s = Unicode.Scalar(v) { all.append(s) } }
        for b in UInt8.min...UInt8.max { all.append(ProtoBytes.scalar(forRawByte: b)) }
        let escaped = String(all).escapedForTerminal
        for s in escaped.unicodeScalars {
            #expect(!(s.value < 0x20 || (0x7F...0x9F).contains(s.value)), "\(s.value) left unescaped")
            #expect(![0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069].contains(s.value))
            #expect(ProtoBytes.rawByte(s) == nil)
        }
    }

    @Test("Distinct strings escape to distinct text")
    func unambiguous() {
        // The backslash is escaped, so a literal "\x1b" is not an ESC.
        #expect("\\x1b".escapedForTerminal != "\u{1B}".escapedForTerminal)
        #expect("\\n".escapedForTerminal == "\\\\n")
    }
}

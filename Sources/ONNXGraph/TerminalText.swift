extension String {
    /// This text made safe to print on one line of a terminal or a log.
    ///
    /// Names, op types, locations and messages come from the model file, and
    /// a model file can come from anyone. Printed raw, an ESC starts a
    /// terminal escape sequence (retitle the window, clear the screen, move
    /// the cursor), a newline splits a one-line error so that a model can
    /// forge lines of a report, and bidirectional overrides reorder what a
    /// reader sees. So every human-readable line bnfold prints goes through
    /// this escape, which keeps printable text (any script) as it is and
    /// spells out everything else:
    ///
    /// - `\\` for a backslash (so that every escape below is unambiguous),
    ///   `\n`, `\t`, `\r`;
    /// - `\xNN` (two lowercase hex digits) for the other C0 controls and DEL,
    ///   and for the reserved scalars of ``ProtoBytes`` — a byte of the file
    ///   that is not valid UTF-8 shows as the byte it is;
    /// - `\u{h}` (lowercase hex) for the C1 controls U+0080–U+009F, the
    ///   bidirectional embeddings, overrides and isolates U+202A–U+202E and
    ///   U+2066–U+2069, and the line and paragraph separators U+2028/U+2029.
    ///
    /// The result contains no control character at all, so it is always a
    /// single line. Line structure of bnfold's own multi-line output is kept
    /// by escaping each line's content, not the newlines between lines.
    public var escapedForTerminal: String {
        guard unicodeScalars.contains(where: TerminalText.needsEscape) else { return self }
        var out = ""
        out.reserveCapacity(utf8.count + 8)
        for scalar in unicodeScalars {
            guard TerminalText.needsEscape(scalar) else {
                out.unicodeScalars.append(scalar)
                continue
            }
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if let byte = ProtoBytes.rawByte(scalar) {
                    out += TerminalText.hexByte(byte)
                } else if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += TerminalText.hexByte(UInt8(scalar.value))
                } else {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                }
            }
        }
        return out
    }
}

/// The rules behind ``Swift/String/escapedForTerminal``.
enum TerminalText {
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x5C, 0x7F...0x9F: true
        case 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: true
        case ProtoBytes.rawByteBase...: true
        default: false
        }
    }

    static func hexByte(_ byte: UInt8) -> String {
        let digits = String(byte, radix: 16)
        return "\\x" + (digits.count == 1 ? "0" + digits : digits)
    }
}

import ONNXGraph

/// Human-readable output built line by line.
///
/// Each line's content is escaped (``Swift/String/escapedForTerminal``) as it
/// is added, so a name, op type or message taken from a model can neither
/// break a line (and forge the next one) nor send control sequences to the
/// terminal, while the line breaks bnfold itself puts between lines stay.
struct TerminalLines {
    private(set) var text = ""

    mutating func add(_ line: String) {
        text += line.escapedForTerminal + "\n"
    }
}

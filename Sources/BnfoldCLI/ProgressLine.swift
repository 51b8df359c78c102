import Dispatch
import Foundation
import ONNXGraph

/// A one-line status for long-running work, redrawn in place on a terminal.
///
/// Short checks stay silent: nothing is drawn before `delay` has passed
/// (one second in the CLI), so a quick `bnfold check` in a terminal prints
/// exactly what it prints in CI. After that the line is redrawn at most ten
/// times a second from a timer (the work itself only stores the newest
/// text, under a lock), and `finish()` erases it so the report that follows
/// starts on a clean line. The CLI creates one only when stderr is a
/// terminal; logs and pipes never see control characters.
final class ProgressLine: @unchecked Sendable {
    private let lock = NSLock()
    private let descriptor: Int32
    private var text = ""
    private var drawn = false
    private var finished = false
    private let timer: DispatchSourceTimer

    /// Starts the timer; draws on `descriptor` from `delay` seconds on.
    init(descriptor: Int32, delay: Double, interval: Double = 0.1) {
        self.descriptor = descriptor
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        timer.schedule(deadline: .now() + delay, repeating: interval)
        timer.setEventHandler { [weak self] in self?.draw() }
        timer.resume()
    }

    /// A progress line on standard error when it is a terminal, else nil.
    static func onTerminal(delay: Double = 1) -> ProgressLine? {
        isatty(STDERR_FILENO) == 1 ? ProgressLine(descriptor: STDERR_FILENO, delay: delay) : nil
    }

    /// The newest status (cheap: called after every node).
    func update(_ status: String) {
        lock.lock()
        text = status
        lock.unlock()
    }

    /// Stops redrawing and erases the line if it was drawn (once; later calls do nothing).
    func finish() {
        timer.cancel()
        lock.lock()
        defer { lock.unlock() }
        guard !finished else { return }
        finished = true
        if drawn { write("\r\u{1B}[2K") }
    }

    private func draw() {
        lock.lock()
        defer { lock.unlock() }
        guard !finished, !text.isEmpty else { return }
        drawn = true
        // The status names nodes of the model: escaped, like every line bnfold prints.
        write("\r\u{1B}[2K" + text.escapedForTerminal)
    }

    private func write(_ s: String) {
        var bytes = Array(s.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if n <= 0 { return }
            offset += n
        }
    }
}

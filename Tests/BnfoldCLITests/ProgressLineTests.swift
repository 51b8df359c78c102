import FoldPipeline
import Testing
import Foundation
@testable import BnfoldCLI
import Equivalence
import GraphPasses
import ONNXFile
import TestSupport

/// The progress line of long checks: silent before its delay, redrawn in
/// place after it, erased at the end.
struct ProgressLineTests {
    /// Everything written to a pipe by `body`'s progress line.
    func written(delay: Double, _ body: (ProgressLine) -> Void) throws -> String {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let line = ProgressLine(descriptor: fds[1], delay: delay, interval: 0.02)
        body(line)
        line.finish()
        close(fds[1])
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            bytes += buffer[..<n]
        }
        close(fds[0])
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func drawsTheNewestStatusAndErasesIt() throws {
        let text = try written(delay: 0) { line in
            line.update("step 1")
            usleep(150_000)
            line.update("step 2")
            usleep(150_000)
        }
        let erase = "\r\u{1B}[2K"
        #expect(text.contains(erase + "step 1"))
        #expect(text.contains(erase + "step 2"))
        #expect(text.hasSuffix("step 2" + erase), "the last thing written must erase the line: \(text.debugDescription)")
    }

    /// The status can name nodes of the model: only the line's own erase
    /// sequence reaches the terminal, the status is escaped.
    @Test func statusIsEscaped() throws {
        let text = try written(delay: 0) { line in
            line.update("node a\n\u{1B}]0;pwned\u{07}")
            usleep(150_000)
        }
        let erase = "\r\u{1B}[2K"
        #expect(text.contains(erase + "node a\\n\\x1b]0;pwned\\x07"), "\(text.debugDescription)")
        #expect(text.replacingOccurrences(of: erase, with: "").unicodeScalars.allSatisfy { $0.value >= 0x20 })
    }

    @Test func quickWorkPrintsNothing() throws {
        let text = try written(delay: 10) { line in
            line.update("step 1")
            usleep(50_000)
        }
        #expect(text.isEmpty)
    }

    @Test func finishTwiceErasesOnce() throws {
        let text = try written(delay: 0) { line in
            line.update("x")
            usleep(100_000)
            line.finish()
        }
        #expect(text.components(separatedBy: "\r\u{1B}[2K").count - 1 >= 2)
        #expect(!text.hasSuffix("\r\u{1B}[2K\r\u{1B}[2K"))
    }

    @Test func statusText() {
        let p = CheckProgress(sample: 1, samples: 2, run: .aFloat64, node: 40, nodes: 176)
        #expect(Check.status(p) == "bnfold check: sample 1/2, A in float64: node 40/176")
        #expect(FoldVerification.pairStatus(3, of: 20, "bn3 folded into conv3") == "bnfold: verifying pair 3/20 (bn3 folded into conv3)")
        #expect(FoldVerification.pairStatus(21, of: 20, "if/then_branch/bn folded into if/then_branch/conv")
                == "bnfold: verifying pair 21/21 (if/then_branch/bn folded into if/then_branch/conv)")
        #expect(FoldVerification.wholeModelStatus(p) == "bnfold: verifying the whole model, A in float64: node 40/176")
    }

    /// The fold's verification reports every pair, in order, then the whole
    /// model's runs node by node: what its status line shows.
    @Test func foldVerificationReportsItsProgress() throws {
        let model = try ModelReader.read(path: TestPaths.fixture("torch_tiny_resnet.onnx"))
        var folded = model
        let report = try PassManager(passes: BuiltinPasses.all).run(on: &folded)
        var seen: [String] = []
        let v = FoldVerification.run(original: model, folded: folded, passes: report, sideBySide: false,
                                     progress: { seen.append($0) })
        #expect(v.failure == nil)
        let pairs = seen.filter { $0.hasPrefix("bnfold: verifying pair ") }
        #expect(pairs.count == v.summary.pairsChecked)
        #expect(pairs.first?.hasPrefix("bnfold: verifying pair 1/\(v.summary.pairsChecked) (") == true)
        #expect(seen.contains { $0.hasPrefix("bnfold: verifying the whole model, A in float64: node ") })
        #expect(seen.last?.hasPrefix("bnfold: verifying the whole model, ") == true)
    }

    /// Run side by side (two threads), the pair checks and the whole-model
    /// check give exactly the sequential verdicts; the status line shows
    /// every pair in order, and whole-model lines only after them.
    @Test func sideBySideVerificationGivesTheSameVerdicts() throws {
        let model = try ModelReader.read(path: TestPaths.fixture("torch_tiny_resnet.onnx"))
        var folded = model
        let report = try PassManager(passes: BuiltinPasses.all).run(on: &folded)
        let one = FoldVerification.run(original: model, folded: folded, passes: report, sideBySide: false)
        var seen: [String] = []
        let two = FoldVerification.run(original: model, folded: folded, passes: report, sideBySide: true,
                                       progress: { seen.append($0) })
        #expect(two.failure == nil)
        #expect(two.summary.pairsChecked == one.summary.pairsChecked)
        #expect(two.summary.wholeModel == "passed")
        #expect(two.summary.worstRatio == one.summary.worstRatio)
        #expect(two.notes == one.notes)
        let pairs = seen.prefix { $0.hasPrefix("bnfold: verifying pair ") }
        #expect(pairs.count == two.summary.pairsChecked)
        #expect(seen.dropFirst(pairs.count).allSatisfy { $0.hasPrefix("bnfold: verifying the whole model, ") })
    }
}

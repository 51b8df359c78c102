import Foundation
import Testing
import TestSupport

/// `bnfold IN -o OUT` verifies the fold before writing (FoldVerifier).
@Suite("bnfold fold verification")
struct VerifyTests {
    static func json(_ text: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test(arguments: [("torch_tiny_resnet.onnx", 6), ("torch_resnet18.onnx", 20)])
    func normalFoldIsVerified(fixture: String, pairs: Int) throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([TestPaths.fixture(fixture), "-o", scratch.file("out.onnx"), "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let v = try #require(Self.json(r.stdout)["verification"] as? [String: Any])
        #expect(v["pairs_checked"] as? Int == pairs)
        #expect(v["pairs_failed"] as? Int == 0)
        #expect(v["whole_model"] as? String == "passed")
        let worst = try #require(v["worst_ratio"] as? Double)
        #expect(worst > 0 && worst < 1)
        let text = try runBnfold([TestPaths.fixture(fixture), "-o", scratch.file("out2.onnx")])
        #expect(text.stdout.contains("verified: \(pairs) folded pair(s) checked, 0 failed; whole model passed"))
    }

    @Test func noVerifySkips() throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([TestPaths.fixture("torch_tiny_resnet.onnx"), "-o", scratch.file("out.onnx"), "--json", "--no-verify"])
        #expect(r.status == 0, "\(r.stderr)")
        let v = try #require(Self.json(r.stdout)["verification"] as? [String: Any])
        #expect(v["whole_model"] as? String == "skipped: --no-verify")
        #expect(v["pairs_checked"] as? Int == 0)
    }

    @Test func unsupportedOperatorsSkipTheWholeModel() throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([TestPaths.fixture("subgraph_if.onnx"), "-o", scratch.file("out.onnx"), "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let v = try #require(Self.json(r.stdout)["verification"] as? [String: Any])
        #expect(v["whole_model"] as? String == "skipped: unsupported operators If")
        // The main graph's pair and one in each If branch.
        #expect(v["pairs_checked"] as? Int == 3)
        #expect(v["pairs_failed"] as? Int == 0)
    }

    // Runs the test driver (Tests/Tools/BnfoldTestDriver) with
    // BNFOLD_TEST_BREAK_FOLD=1: a pass after the built-in ones scales the
    // first folded weight by 1.01. The shipped binary ignores the variable.
    @Test func failedVerificationWritesNothing() throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture("torch_tiny_resnet.onnx")
        let r = try runCommand(TestPaths.testDriverBinary, [input, "-o", scratch.file("out.onnx")], environment: ["BNFOLD_TEST_BREAK_FOLD": "1"])
        #expect(r.status == 1)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.hasPrefix("bnfold: error: \(input): verification failed: "))
        // Every recorded fold passes its pair check; the unrecorded edit is
        // caught by the whole-model check, which names the pass.
        #expect(r.stderr.contains("whole model, output '60': error "))
        #expect(r.stderr.hasSuffix("; pass 'test-break-first-fold' changed the graph without a rewrite record\n"))
        #expect(r.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("out.onnx")))
        // --no-verify writes even the broken fold (the hook still applies).
        let unchecked = try runCommand(TestPaths.testDriverBinary, [input, "-o", scratch.file("out.onnx"), "--no-verify"],
                                       environment: ["BNFOLD_TEST_BREAK_FOLD": "1"])
        #expect(unchecked.status == 0)
        // The shipped binary has no such hook: the same run folds and verifies.
        let shipped = try runBnfold([input, "-o", scratch.file("shipped.onnx")], environment: ["BNFOLD_TEST_BREAK_FOLD": "1"])
        #expect(shipped.status == 0, "\(shipped.stderr)")
    }
}

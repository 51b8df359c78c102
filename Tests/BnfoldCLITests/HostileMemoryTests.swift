import Foundation
import ONNXFile
import ONNXGraph
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Tiny files that ask for a lot (Fuzz/regressions/mem-*.onnx, made by
/// scripts/make_hostile_regressions.py): the reference runtime's memory
/// budget turns each into a skipped check with its reason (fold) or exit 2
/// with one line (check), never an abort or gigabytes taken.
@Suite struct HostileMemoryTests {
    let regression = HostileArithmeticTests.regression

    /// One line, naming the budget, exit 2, no signal.
    func expectBudgetError(_ r: CommandResult, budget: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.signal == nil, sourceLocation: sourceLocation)
        #expect(r.status == 2, sourceLocation: sourceLocation)
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.hasPrefix("bnfold: error: "), sourceLocation: sourceLocation)
        #expect(r.stderr.contains("over the memory budget of \(budget) (--max-memory or BNFOLD_MAX_MEMORY raise it)"),
                "\(r.stderr)", sourceLocation: sourceLocation)
    }

    @Test func checkOfAHugeDeclaredInputIsExit2() throws {
        let input = regression("mem-input-46000.onnx")
        let r = try runBnfold(["check", input, input, "--max-memory", "1G"])
        expectBudgetError(r, budget: "1 GiB")
        #expect(r.stderr == "bnfold: error: \(input): cannot be compared: the reference runtime needs 31.5 GiB more with 0 B already held, over the memory budget of 1 GiB (--max-memory or BNFOLD_MAX_MEMORY raise it)\n")
        #expect(r.stdout.isEmpty)
    }

    @Test func theEnvironmentVariableSetsTheBudget() throws {
        let input = regression("mem-input-46000.onnx")
        expectBudgetError(try runBnfold(["check", input, input], environment: ["BNFOLD_MAX_MEMORY": "512M"]), budget: "512 MiB")
        // The option wins over the variable.
        expectBudgetError(try runBnfold(["check", input, input, "--max-memory", "2G"], environment: ["BNFOLD_MAX_MEMORY": "512M"]),
                          budget: "2 GiB")
        let bad = try runBnfold(["check", input, input], environment: ["BNFOLD_MAX_MEMORY": "plenty"])
        #expect(bad.status == 2)
        #expect(bad.stderr == "bnfold: error: BNFOLD_MAX_MEMORY: BNFOLD_MAX_MEMORY='plenty' is not a size (examples: 512M, 4G, 1.5GiB)\n")
        let option = try runBnfold(["check", input, input, "--max-memory", "3 gallons"])
        #expect(option.status == 2)
        #expect(option.stderr == "bnfold: error: --max-memory '3 gallons' is not a size (examples: 512M, 4G, 1.5GiB) (see 'bnfold --help')\n")
    }

    /// `--input-shape X=46340,46340` used to abort in the allocator.
    @Test func aHugeInputShapeIsExit2() throws {
        let input = regression("mem-conv-dilation-8000.onnx")
        let r = try runBnfold(["check", input, input, "--input-shape", "x=1,1,46340,46340", "--max-memory", "4G"])
        expectBudgetError(r, budget: "4 GiB")
    }

    /// A pair whose check would need more than the budget is skipped and
    /// said to be; the fold is written (its verification was partial, and
    /// the report says which part).
    @Test func aPairOverTheBudgetIsSkippedWithItsReason() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("o.onnx")
        let r = try runBnfold([regression("mem-conv-dilation-8000.onnx"), "-o", out, "--max-memory", "1G", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let verification = try #require(report?["verification"] as? [String: Any])
        #expect(verification["pairs_checked"] as? Int == 0)
        #expect(verification["pairs_failed"] as? Int == 0)
        #expect(verification["pairs_skipped"] as? Int == 1)
        let notes = report?["notes"] as? [String] ?? []
        #expect(notes.contains { $0.hasPrefix("1 folded pair(s) were not checked (bn folded into conv: running it needs ")
                                 && $0.hasSuffix("over the memory budget of 1 GiB (--max-memory or BNFOLD_MAX_MEMORY raise it))") },
                "\(notes)")
        #expect(FileManager.default.fileExists(atPath: out))
    }

    /// A ConstantOfShape of 10⁹ elements that fold-constants leaves (it adds
    /// a graph input) would be materialised by the whole-model check.
    @Test func aWholeModelOverTheBudgetIsSkippedWithItsReason() throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([regression("mem-constantofshape-1e9.onnx"), "-o", scratch.file("o.onnx"), "--max-memory", "1G"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("verified: 1 folded pair(s) checked, 0 failed; whole model skipped: cannot run: node 'cos' (ConstantOfShape): needs 7.5 GiB more with "), "\(r.stdout)")
        #expect(r.stdout.contains("over the memory budget of 1 GiB"))
    }

    /// fold-constants stops at its total: of 200 ConstantOfShape nodes of
    /// 2²² elements, 16 are computed (2²⁶ in all), the others kept with a remark.
    @Test func foldConstantsStopsAtItsTotal() throws {
        let r = try runBnfold(["inspect", regression("mem-many-constantofshape.onnx"), "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let remarks = report?["remarks"] as? [[String: Any]] ?? []
        #expect(remarks.filter { $0["reason"] as? String == "ConstantFolded" }.count == 16)
        let missed = remarks.filter { $0["reason"] as? String == "ExceedsSizeLimit" }
        #expect(missed.count == 184)
        #expect(missed.first?["message"] as? String == "its output's 4194304 elements would take the pass past the 67108864 elements it materialises in all")
    }

    /// Whether this process (and so the bnfold next to it) runs under
    /// AddressSanitizer, whose shadow memory cannot live under RLIMIT_AS.
    static var sanitized: Bool { dlsym(nil, "__asan_init") != nil }

    /// Under RLIMIT_AS (ulimit -v) the default budget is half the limit, and
    /// a budget raised past what the allocator gives is its refusal as an
    /// error line — not Swift's `failed to allocate` abort (exit 134).
    @Test(.disabled(if: sanitized, "AddressSanitizer reserves terabytes of address space"))
    func allocatorRefusalsAreErrorLinesNotAborts() throws {
        let input = regression("mem-input-46000.onnx")
        func limited(_ extra: [String]) throws -> CommandResult {
            try runCommand("/bin/sh", ["-c", "ulimit -v 3000000 && exec \"$0\" \"$@\"", TestPaths.bnfoldBinary, "check", input, input] + extra)
        }
        let byDefault = try limited([])
        expectBudgetError(byDefault, budget: "1.4 GiB")
        let raised = try limited(["--max-memory", "1T"])
        #expect(raised.signal == nil)
        #expect(raised.status == 2)
        #expect(raised.stderr == "bnfold: error: \(input): cannot be compared: the reference runtime cannot allocate 31.5 GiB: the system refused (out of memory)\n")
    }

    /// A long check and a fold's verification end at once on SIGINT.
    @Test func checkAndVerificationStopOnInterrupt() throws {
        let scratch = ScratchDirectory()
        let model = TestPaths.fixture("torch_resnet18.onnx")
        // A fold whose verification takes seconds (ResNet-18's takes less
        // than the 0.3 s before the signal): 12 Conv → BN blocks on 1×16×192×192.
        var rng = SeededGenerator(seed: 11)
        var nodes: [Node] = [], initializers: [Tensor] = []
        var x = "x"
        for i in 0..<12 {
            nodes += [Node(opType: "Conv", inputs: [x, "w\(i)"], outputs: ["c\(i)"], name: "conv\(i)", attributes: [.ints("pads", [1, 1, 1, 1])]),
                      Node(opType: "BatchNormalization", inputs: ["c\(i)", "g\(i)", "b\(i)", "m\(i)", "v\(i)"], outputs: ["y\(i)"], name: "bn\(i)")]
            initializers += [makeTensor("w\(i)", .float, dims: [16, 16, 3, 3], values: rng.uniforms(16 * 16 * 9, -0.1...0.1)),
                             makeTensor("g\(i)", .float, dims: [16], values: rng.uniforms(16, 0.5...1.5)),
                             makeTensor("b\(i)", .float, dims: [16], values: rng.uniforms(16, -1...1)),
                             makeTensor("m\(i)", .float, dims: [16], values: rng.uniforms(16, -1...1)),
                             makeTensor("v\(i)", .float, dims: [16], values: rng.uniforms(16, 0.25...2))]
            x = "y\(i)"
        }
        let slow = Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: Graph(
            name: "slow", nodes: nodes, inputs: [valueInfo("x", .float, dims: [1, 16, 192, 192])],
            outputs: [valueInfo(x, .float, dims: [1, 16, 192, 192])], initializers: initializers))
        let slowPath = scratch.file("slow.onnx")
        _ = try ModelWriter.write(slow, to: slowPath)
        for arguments in [["check", model, model, "--samples", "1000"], [slowPath, "-o", scratch.file("o.onnx")]] {
            let process = BackgroundProcess(bnfold: arguments)
            try process.start()
            usleep(300_000)
            let sent = ContinuousClock.now
            process.send(SIGINT)
            let r = try process.wait(timeout: .seconds(20))
            #expect(r.signal == SIGINT, "\(arguments[0]): \(r.status) \(r.stderr)")
            #expect(ContinuousClock.now - sent < .seconds(5))
        }
        #expect(scratch.contents() == ["slow.onnx"])
    }
}

/// Values: non-finite values both models agree on are equal, and Conv
/// attribute extents are checked against the input the model fixes.
@Suite struct HostileValueTests {
    let regression = HostileArithmeticTests.regression

    /// Cast(int64 max → float16) is +inf in both models and 9.2e18 in the
    /// float64 reference: it used to make the whole-model ratio NaN.
    @Test func equalInfinitiesAreEqual() throws {
        let input = regression("value-float16-overflow.onnx")
        let check = try runBnfold(["check", input, input, "--json"])
        #expect(check.status == 0, "\(check.stdout)")
        let report = try JSONSerialization.jsonObject(with: Data(check.stdout.utf8)) as? [String: Any]
        let z = (report?["outputs"] as? [[String: Any]])?.first { $0["name"] as? String == "z" }
        #expect(z?["equivalent"] as? Bool == true)
        #expect(z?["ratio"] as? Double == 0)
        #expect(z?["cosine_similarity"] as? Double == 1)
        let scratch = ScratchDirectory()
        let fold = try runBnfold([input, "-o", scratch.file("o.onnx")])
        #expect(fold.status == 0, "\(fold.stderr)")
        #expect(fold.stdout.contains("whole model passed"))
    }

    @Test func aDilatedKernelLargerThanTheFixedInputIsAnInputError() throws {
        let scratch = ScratchDirectory()
        let input = regression("arith-conv-dilation-exceeds-input.onnx")
        let r = try runBnfold([input, "-o", scratch.file("o.onnx")])
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(input): is not a valid ONNX model: node 'conv' (Conv) in the main graph has kernel [3, 3] with dilations [100, 100]: its extent on spatial axis 0 is 201, larger than the input 'x' of size 8 padded to 8\n")
        #expect(scratch.contents().isEmpty)
    }
}

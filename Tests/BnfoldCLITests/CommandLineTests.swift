import Foundation
import Testing
import ONNXFile
import TestSupport

/// The command-line contract: exit codes, one-line errors, no output on failure.
@Suite struct CommandLineTests {
    @Test func foldsAndReports() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("fused.onnx")
        let r = try runBnfold([TestPaths.fixture("torch_resnet18.onnx"), "-o", out])
        #expect(r.status == 0)
        #expect(r.stderr.isEmpty)
        #expect(r.stdout.contains("BatchNormalization: 20 found, 20 folded, 0 kept"))
        #expect(r.stdout.contains("nodes: 69 -> 49"))
        #expect(scratch.contents() == ["fused.onnx"])
    }

    /// The issue's acceptance case: a PyTorch legacy export (default
    /// settings) of ConvTranspose2d+BatchNorm2d and Linear+BatchNorm1d comes
    /// out with no BatchNormalization left, both pairs verified locally.
    @Test func pytorchDeconvAndLinearLoseEveryBatchNorm() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("fused.onnx")
        let r = try runBnfold([TestPaths.fixture("torch_deconv_linear_bn.onnx"), "-o", out, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["batchnorm"] as? [String: Int] == ["found": 2, "folded": 2, "kept": 0])
        let reasons = (object["remarks"] as? [[String: String]])?.map { $0["reason"] ?? "" }
        #expect(reasons == ["ConvTransposeBatchNormFolded", "GemmBatchNormFolded"])
        let verification = try #require(object["verification"] as? [String: Any])
        #expect(verification["pairs_checked"] as? Int == 2)
        #expect(verification["whole_model"] as? String == "passed")
        let written = try ModelReader.read(path: out)
        #expect(written.graph?.nodes.map(\.opType) == ["ConvTranspose", "Relu", "Flatten", "Gemm"])
    }

    /// BN → Conv → BN ends as one Conv; the chain is verified as a whole.
    @Test func chainEndsAsOneConv() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("fused.onnx")
        let r = try runBnfold([TestPaths.fixture("chain_bn_conv_bn.onnx"), "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("BatchNormalization: 2 found, 2 folded, 0 kept"))
        #expect(r.stdout.contains("whole model passed"))
        #expect(try ModelReader.read(path: out).graph?.nodes.map(\.opType) == ["Conv"])
    }

    @Test func jsonReport() throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([TestPaths.fixture("skip_conv_output_used_twice.onnx"), "-o", scratch.file("o.onnx"), "--json"])
        #expect(r.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let bn = try #require(object["batchnorm"] as? [String: Int])
        #expect(bn == ["found": 1, "folded": 0, "kept": 1])
        let remarks = try #require(object["remarks"] as? [[String: String]])
        #expect(remarks.count == 1)
        #expect(remarks.first?["kind"] == "missed")
        #expect(remarks.first?["reason"] == "ProducerHasOtherUses")
        #expect(remarks.first?["pass"] == "fold-batchnorm")
        #expect(object["nodes_before"] as? Int == 3)
        #expect(object["passes"] as? [String] == ["fold-constants", "fold-batchnorm", "fold-mul-add", "fold-batchnorm-forward"])
        #expect(r.stdout.split(separator: "\n").count == 1)
    }

    /// The op census before -> after: every op type in JSON, only the
    /// changed ones (most-changed first, then by name) on the text line.
    @Test func opCountsBeforeAndAfter() throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture("matmul_add_bn.onnx")
        let r = try runBnfold([input, "-o", scratch.file("o.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.split(separator: "\n").dropFirst(2).first
                == "  ops: Add 1 -> 0, BatchNormalization 1 -> 0, Gemm 0 -> 1, MatMul 1 -> 0")
        let j = try runBnfold([input, "-o", scratch.file("o.onnx"), "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        let ops = try #require(object["ops"] as? [String: [String: Int]])
        #expect(ops == ["Add": ["before": 1, "after": 0], "BatchNormalization": ["before": 1, "after": 0],
                        "Gemm": ["before": 0, "after": 1], "MatMul": ["before": 1, "after": 0]])
        let kept = try runBnfold([TestPaths.fixture("skip_conv_output_used_twice.onnx"), "-o", scratch.file("k.onnx")])
        #expect(kept.stdout.contains("\n  ops: unchanged (3 op types)\n"))
        let resnet = try runBnfold([TestPaths.fixture("torch_resnet18.onnx"), "-o", scratch.file("r.onnx")])
        #expect(resnet.stdout.contains("\n  ops: BatchNormalization 20 -> 0 (7 other op types unchanged)\n"))
    }

    @Test func passesNoneCopiesTheModel() throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture("fidelity_rich.onnx")
        let r = try runBnfold([input, "-o", scratch.file("o.onnx"), "--passes", "none"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("(no passes run)"))
        let a = try Data(contentsOf: URL(fileURLWithPath: input))
        let b = try Data(contentsOf: URL(fileURLWithPath: scratch.file("o.onnx")))
        #expect(a == b)
    }

    @Test func listsPasses() throws {
        let r = try runBnfold(["passes"])
        #expect(r.status == 0)
        #expect(r.stdout.hasPrefix("fold-constants  "))
        #expect(r.stdout.contains("\nfold-batchnorm  "))
    }

    @Test func externalDataModes() throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture("conv2d_bn_external.onnx")
        var r = try runBnfold([input, "-o", scratch.file("keep.onnx")])
        #expect(r.status == 0)
        r = try runBnfold([input, "-o", scratch.file("inline.onnx"), "--external-data", "inline"])
        #expect(r.status == 0)
        #expect(scratch.contents() == ["inline.onnx", "keep.onnx", "keep.onnx.data"])
        r = try runBnfold([input, "-o", scratch.file("x.onnx"), "--external-data", "sideways"])
        #expect(r.status == 2)
        #expect(r.stderrLines.count == 1)
    }

    // MARK: Bad input: exit 2, one line naming the file, no output file.

    static let badInputs: [String] = [
        "bad/not_protobuf.onnx", "bad/empty.onnx", "bad/truncated.onnx", "bad/not_a_model.onnx",
        "bad/data_length_mismatch.onnx", "bad/unknown_opset.onnx", "bad/ext_absolute.onnx",
        "bad/ext_dotdot.onnx", "bad/ext_missing.onnx",
    ]

    @Test(arguments: badInputs)
    func badInputExitsTwoWithOneLine(_ name: String) throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture(name)
        let r = try runBnfold([input, "-o", scratch.file("out.onnx")])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.hasPrefix("bnfold: error: \(input): "))
        #expect(scratch.contents().isEmpty)
    }

    @Test func emptyOutputPathIsAUsageErrorBeforeReading() throws {
        let scratch = ScratchDirectory()
        // The input does not exist: the usage error must come first.
        let r = try runBnfold([scratch.file("nope.onnx"), "-o", ""])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr == "bnfold: error: -o/--output must name a file, not an empty string (see 'bnfold --help')\n")
        #expect(scratch.contents().isEmpty)
    }

    @Test func unknownOpsetMessage() throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([TestPaths.fixture("bad/unknown_opset.onnx"), "-o", scratch.file("o.onnx")])
        #expect(r.stderr.contains("opset 99"))
    }

    @Test func missingFileAndDirectory() throws {
        let scratch = ScratchDirectory()
        var r = try runBnfold([scratch.file("nope.onnx"), "-o", scratch.file("o.onnx")])
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(scratch.file("nope.onnx")): cannot read: no such file\n")
        r = try runBnfold([scratch.path, "-o", scratch.file("o.onnx")])
        #expect(r.status == 2)
        #expect(r.stderr.contains("is a directory"))
        #expect(scratch.contents().isEmpty)
    }

    @Test func outputEqualToInputNeedsInPlace() throws {
        let scratch = ScratchDirectory()
        let model = scratch.file("m.onnx")
        try FileManager.default.copyItem(atPath: TestPaths.fixture("conv2d_bn.onnx"), toPath: model)
        let original = try Data(contentsOf: URL(fileURLWithPath: model))
        var r = try runBnfold([model, "-o", model])
        #expect(r.status == 2)
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.contains("--in-place"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: model)) == original)
        r = try runBnfold([model, "-o", model, "--in-place"])
        #expect(r.status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: model)) != original)
        #expect(scratch.contents() == ["m.onnx"])
    }

    @Test func usageErrorsExitTwoWithOneLine() throws {
        for args in [[String](), [TestPaths.fixture("conv2d_bn.onnx")],
                     [TestPaths.fixture("conv2d_bn.onnx"), "-o", "/tmp/x.onnx", "--passes", "no-such-pass"],
                     ["--bogus"]] {
            let r = try runBnfold(args)
            #expect(r.status == 2, "\(args)")
            #expect(r.stderrLines.count == 1, "\(args): \(r.stderr)")
            #expect(r.stderr.hasPrefix("bnfold: error: "))
        }
    }

    @Test func outputDirectoryMissing() throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([TestPaths.fixture("conv2d_bn.onnx"), "-o", scratch.file("no/such/dir/o.onnx")])
        #expect(r.status == 2)
        #expect(r.stderr.contains("does not exist"))
    }

    /// `bnfold --help` shows the fold's usage and options first (every usage
    /// error points there), then the subcommands.
    @Test func helpShowsTheFoldFirstThenTheSubcommands() throws {
        for flag in ["--help", "-h", "help"] {
            let r = try runBnfold([flag])
            #expect(r.status == 0)
            let usage = try #require(r.stdout.range(of: "USAGE: bnfold [fold] "))
            let option = try #require(r.stdout.range(of: "  --no-verify  "))
            let subcommands = try #require(r.stdout.range(of: "SUBCOMMANDS:"))
            #expect(usage.lowerBound < option.lowerBound && option.lowerBound < subcommands.lowerBound)
            #expect(r.stdout.contains("  check "))
        }
        // Subcommand help is ArgumentParser's own.
        let check = try runBnfold(["check", "--help"])
        #expect(check.status == 0)
        #expect(check.stdout.contains("USAGE: bnfold check <model-a> <model-b>"))
    }
}

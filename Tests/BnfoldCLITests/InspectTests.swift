import Foundation
import Testing
import TestSupport

/// `bnfold inspect`, `--disable` and `--remarks`.
@Suite struct InspectTests {
    /// Every BN with its neighbours and verdict; nothing is written; the
    /// input is untouched.
    @Test func inspectListsEveryBatchNorm() throws {
        let input = TestPaths.fixture("skip_no_conv_producer.onnx")
        let before = try Data(contentsOf: URL(fileURLWithPath: input))
        let fixturesBefore = try FileManager.default.contentsOfDirectory(atPath: TestPaths.fixtures.path).sorted()
        let r = try runBnfold(["inspect", input])
        #expect(r.status == 0)
        #expect(r.stderr.isEmpty)
        #expect(r.stdout == """
            bnfold 0.1.0 inspect: \(input)
              bn_on_input (after a graph input, before Relu 'relu'): kept [NoFoldableProducer]: its input 'X' comes from no node (a graph input or initializer), not a Conv, ConvTranspose, Gemm or MatMul
              bn_after_relu (after Relu 'relu'): kept [NoFoldableProducer]: its input 'R' comes from a Relu node, not a Conv, ConvTranspose, Gemm or MatMul
              BatchNormalization: 2 found, 0 would fold, 2 kept

            """)
        #expect(try Data(contentsOf: URL(fileURLWithPath: input)) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: TestPaths.fixtures.path).sorted() == fixturesBefore)
    }

    @Test func inspectFoldVerdicts() throws {
        let r = try runBnfold(["inspect", TestPaths.fixture("torch_resnet18.onnx")])
        #expect(r.status == 0)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.last == "  BatchNormalization: 20 found, 20 would fold, 0 kept")
        #expect(lines.filter { $0.contains(": would fold [ConvBatchNormFolded]: folded into ") }.count == 20)
    }

    @Test func inspectJSON() throws {
        let r = try runBnfold(["inspect", "--json", TestPaths.fixture("skip_conv_output_used_twice.onnx")])
        #expect(r.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let entries = try #require(object["batchnorms"] as? [[String: Any]])
        #expect(entries.count == 1)
        let bn = try #require(entries.first)
        #expect(bn["name"] as? String == "bn")
        #expect(bn["verdict"] as? String == "keep")
        #expect(bn["reason"] as? String == "ProducerHasOtherUses")
        #expect(bn["producer"] as? [String: String] == ["op": "Conv", "name": "conv"])
        #expect((object["remarks"] as? [Any])?.count == 1)
        #expect(object["passes"] as? [String] == ["fold-constants", "fold-batchnorm", "fold-mul-add", "fold-batchnorm-forward"])

        let onInput = try runBnfold(["inspect", "--json", TestPaths.fixture("skip_no_conv_producer.onnx")])
        let first = try #require((try JSONSerialization.jsonObject(with: Data(onInput.stdout.utf8)) as? [String: Any])?["batchnorms"] as? [[String: Any]]).first
        #expect(first?["producer"] is NSNull, "a BN on a graph input has producer null")
    }

    /// BNs inside If branches are listed with their path; options reach the passes.
    @Test func inspectSubgraphsAndOptions() throws {
        var r = try runBnfold(["inspect", TestPaths.fixture("subgraph_if.onnx")])
        #expect(r.status == 0)
        let names = r.stdout.split(separator: "\n").dropFirst().dropLast().map { String($0.split(separator: " ")[0]) }
        #expect(names == ["m_bn", "if/else_branch/e_bn", "if/then_branch/t_bn"])
        #expect(r.stdout.hasSuffix("BatchNormalization: 3 found, 3 would fold, 0 kept\n"))

        let overridable = TestPaths.fixture("skip_overridable_initializer.onnx")
        r = try runBnfold(["inspect", overridable])
        #expect(r.stdout.contains("kept [OverridableInitializer]"))
        r = try runBnfold(["inspect", overridable, "--assume-constant-inputs"])
        #expect(r.stdout.contains("would fold [ConvBatchNormFolded]"))
    }

    @Test func inspectBadInput() throws {
        let r = try runBnfold(["inspect", TestPaths.fixture("bad/truncated.onnx")])
        #expect(r.status == 2)
        #expect(r.stderrLines.count == 1)
        #expect(r.stdout.isEmpty)
    }

    /// `--disable` removes a pass from the pipeline (the others still run);
    /// disabling every pass runs none; unknown names are usage errors.
    @Test func disableLeavesThePassOut() throws {
        let scratch = ScratchDirectory()
        var r = try runBnfold([TestPaths.fixture("torch_tiny_resnet.onnx"), "-o", scratch.file("o.onnx"), "--disable", "fold-batchnorm"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("BatchNormalization: 6 found, 0 folded, 6 kept"))
        #expect(!r.stdout.contains("(no passes run)"))
        r = try runBnfold([TestPaths.fixture("torch_tiny_resnet.onnx"), "-o", scratch.file("o.onnx"), "--json",
                           "--disable", "fold-batchnorm"])
        #expect(r.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["passes"] as? [String] == ["fold-constants", "fold-mul-add", "fold-batchnorm-forward"])
        #expect(object["batchnorm"] as? [String: Int] == ["found": 6, "folded": 0, "kept": 6])
        r = try runBnfold([TestPaths.fixture("torch_tiny_resnet.onnx"), "-o", scratch.file("o.onnx"),
                           "--passes", "fold-batchnorm", "--disable", "fold-batchnorm"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("  nodes: 22 -> 22 (no passes run)\n  BatchNormalization: 6 found, 0 folded, 6 kept\n"))
        r = try runBnfold(["inspect", TestPaths.fixture("torch_tiny_resnet.onnx"), "--disable", "fold-batchnorm"])
        #expect(r.stdout.contains("BatchNormalization: 6 found, 0 would fold, 6 kept"))
        r = try runBnfold([TestPaths.fixture("torch_tiny_resnet.onnx"), "-o", scratch.file("p.onnx"), "--disable", "no-such-pass"])
        #expect(r.status == 2)
        #expect(r.stderrLines == ["bnfold: error: --disable: unknown pass 'no-such-pass'; 'bnfold passes' lists them (see 'bnfold --help')"])
        #expect(scratch.contents() == ["o.onnx"])
    }

    /// `--remarks` chooses what the text report lists; JSON always has every remark.
    @Test func remarksFilter() throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture("skip_conv_output_used_twice.onnx")
        func report(_ which: String?) throws -> [String] {
            let r = try runBnfold([input, "-o", scratch.file("o.onnx")] + (which.map { ["--remarks", $0] } ?? []))
            #expect(r.status == 0)
            return r.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("    ") }
        }
        let kept = "    kept bn [ProducerHasOtherUses]: the output 'C' of conv is also used by relu, which needs its unnormalized values"
        #expect(try report(nil) == [kept])
        #expect(try report("missed") == [kept])
        #expect(try report("none") == [])
        let folded = try runBnfold([TestPaths.fixture("conv2d_bn.onnx"), "-o", scratch.file("f.onnx"), "--remarks", "all"])
        let applied = folded.stdout.split(separator: "\n").filter { $0.hasPrefix("    applied ") }
        #expect(applied.count == 1)
        #expect(applied.first?.contains("[ConvBatchNormFolded]: folded into") == true)
        let bad = try runBnfold([input, "-o", scratch.file("o.onnx"), "--remarks", "some"])
        #expect(bad.status == 2)
        #expect(bad.stderrLines.count == 1)
    }
}

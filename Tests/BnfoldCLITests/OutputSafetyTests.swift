import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What `-o` may name and what happens to it: devices, FIFOs and `-` get the
/// bytes as a stream and are never replaced; a symbolic link keeps being a
/// link while its target is replaced; modes and owners are kept; writers of
/// one output take turns; stale temporaries are removed.
@Suite struct OutputSafetyTests {
    static let resnet = TestPaths.fixture("torch_resnet18.onnx")

    static func status(_ path: String) -> stat? {
        var info = stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    /// The bytes a plain `-o file` run writes, for comparison.
    static func reference(in scratch: ScratchDirectory, _ input: String = resnet) throws -> Data {
        let r = try runBnfold([input, "-o", scratch.file("reference.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        return try Data(contentsOf: URL(fileURLWithPath: scratch.file("reference.onnx")))
    }

    @Test func devNullReceivesTheBytesAndStaysADevice() throws {
        let before = try #require(Self.status("/dev/null"))
        let r = try runBnfold([Self.resnet, "-o", "/dev/null"])
        #expect(r.status == 0, "\(r.stderr)")
        let after = try #require(Self.status("/dev/null"))
        #expect(after.st_mode & S_IFMT == S_IFCHR)
        #expect(after.st_rdev == before.st_rdev && after.st_ino == before.st_ino)
        #expect(r.stdout.contains("-> /dev/null"))
    }

    @Test func fifoReceivesTheModelAndStaysAFifo() throws {
        let scratch = ScratchDirectory()
        let expected = try Self.reference(in: scratch)
        let fifo = scratch.file("pipe.onnx")
        #expect(mkfifo(fifo, 0o644) == 0)
        let reader = BackgroundProcess("/bin/sh", ["-c", "cat \"$0\" > \"$1\"", fifo, scratch.file("received.onnx")])
        try reader.start()
        let r = try runBnfold([Self.resnet, "-o", fifo])
        #expect(r.status == 0, "\(r.stderr)")
        _ = try reader.wait(timeout: .seconds(60))
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("received.onnx"))) == expected)
        #expect(try #require(Self.status(fifo)).st_mode & S_IFMT == S_IFIFO)
    }

    @Test func dashWritesTheModelToStandardOutputAndTheReportToStandardError() throws {
        let scratch = ScratchDirectory()
        let expected = try Self.reference(in: scratch)
        let r = try runCommand("/bin/sh", ["-c", "\"$0\" \"$1\" -o - > \"$2\"", TestPaths.bnfoldBinary, Self.resnet,
                                           scratch.file("stdout.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("stdout.onnx"))) == expected)
        #expect(r.stderr.contains("BatchNormalization: 20 found, 20 folded, 0 kept"))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("-")))
    }

    @Test func streamOutputRefusesExternalData() throws {
        let r = try runBnfold([Self.resnet, "-o", "-", "--external-data", "external"])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr == "bnfold: error: standard output: cannot be written with external data: a stream or device has no directory for the data file\n")
    }

    @Test func symbolicLinkStaysALinkAndItsTargetIsReplacedKeepingItsMode() throws {
        let scratch = ScratchDirectory()
        let expected = try Self.reference(in: scratch)
        try FileManager.default.createDirectory(atPath: scratch.file("real"), withIntermediateDirectories: true)
        let target = scratch.file("real/model.onnx")
        try Data("old".utf8).write(to: URL(fileURLWithPath: target))
        #expect(chmod(target, 0o600) == 0)
        #expect(symlink("real/model.onnx", scratch.file("link.onnx")) == 0)
        let r = try runBnfold([Self.resnet, "-o", scratch.file("link.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try #require(Self.status(scratch.file("link.onnx"))).st_mode & S_IFMT == S_IFLNK)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: scratch.file("link.onnx")) == "real/model.onnx")
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == expected)
        #expect(try #require(Self.status(target)).st_mode & 0o7777 == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.file("real")) == ["model.onnx"])
    }

    @Test func newOutputTakesTheInputsModeAndAnExistingOutputKeepsItsOwn() throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("in.onnx")
        try FileManager.default.copyItem(atPath: Self.resnet, toPath: input)
        #expect(chmod(input, 0o600) == 0)
        var r = try runBnfold([input, "-o", scratch.file("new.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try #require(Self.status(scratch.file("new.onnx"))).st_mode & 0o7777 == 0o600)
        let existing = scratch.file("existing.onnx")
        try Data("old".utf8).write(to: URL(fileURLWithPath: existing))
        #expect(chmod(existing, 0o640) == 0)
        #expect(chown(existing, 12345, 23456) == 0 || geteuid() != 0)
        r = try runBnfold([input, "-o", existing, "--external-data", "external", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        for file in [existing, scratch.file("existing.onnx.data")] {
            let info = try #require(Self.status(file))
            #expect(info.st_mode & 0o7777 == 0o640, "\(file)")
            if geteuid() == 0 { #expect(info.st_uid == 12345 && info.st_gid == 23456, "\(file)") }
        }
    }

    /// Replacing an output that has external data: the new data goes to a
    /// name the old model does not use, so whatever point a run dies at, the
    /// model file on disk reads its own data; the old data file goes after.
    @Test func replacedOutputNeverMeetsTheNewRunsData() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("out.onnx")
        var names: [String] = []
        for _ in 0..<3 {
            let r = try runBnfold([Self.resnet, "-o", out, "--external-data", "external", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            names.append(try #require((object["written"] as? [String: Any])?["external_data_file"] as? String))
            #expect(scratch.contents() == ["out.onnx", names.last!])
            let check = try runBnfold(["check", Self.resnet, out])
            #expect(check.status == 0, "\(check.stderr)")
        }
        #expect(names == ["out.onnx.data", "out.onnx-1.data", "out.onnx.data"])
    }

    /// The old output is read for its data file names only: a data file
    /// that no longer matches it (truncated here, so the old model would not
    /// load) still gets the protection — the new data takes the other name.
    @Test func aDamagedOldOutputsDataFileIsStillNotOverwrittenInPlace() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("out.onnx")
        let first = try runBnfold([Self.resnet, "-o", out, "--external-data", "external"])
        #expect(first.status == 0, "\(first.stderr)")
        try Data("short".utf8).write(to: URL(fileURLWithPath: scratch.file("out.onnx.data")))
        #expect(try runBnfold(["check", out, out]).status == 2)   // the old output no longer loads
        let second = try runBnfold([Self.resnet, "-o", out, "--external-data", "external", "--json"])
        #expect(second.status == 0, "\(second.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any])
        #expect((object["written"] as? [String: Any])?["external_data_file"] as? String == "out.onnx-1.data")
        #expect(scratch.contents() == ["out.onnx", "out.onnx-1.data"])
    }

    /// Two different models written to one `-o` at the same time, many
    /// rounds: the result is always one of them, whole, with its own data.
    @Test func concurrentWritersNeverMixModelAndData() throws {
        let scratch = ScratchDirectory()
        let models = [Self.resnet, TestPaths.fixture("conv2d_bn_external.onnx")]
        let out = scratch.file("out.onnx")
        for round in 0..<12 {
            let writers = models.map {
                BackgroundProcess(TestPaths.bnfoldBinary, [$0, "-o", out, "--external-data", "external", "--no-verify"])
            }
            for w in writers { try w.start() }
            for w in writers {
                let r = try w.wait(timeout: .seconds(120))
                #expect(r.status == 0, "round \(round): \(r.stderr)")
            }
            let matches = try models.filter { try runBnfold(["check", $0, out]).status == 0 }
            #expect(matches.count == 1, "round \(round): the output matches \(matches)")
            #expect(!scratch.contents().contains { $0.contains("bnfold-tmp") })
        }
    }

    /// A run killed with SIGKILL cannot clean up; the next run in the same
    /// directory removes such temporaries of processes that no longer exist,
    /// and leaves a live process's alone.
    @Test func staleTemporariesOfDeadProcessesAreRemoved() throws {
        let scratch = ScratchDirectory()
        // A pid above the kernel's pid_max (4194304 at most) never exists.
        let dead = scratch.file(".out.onnx.bnfold-tmp-99999999-abcdef")
        let live = scratch.file(".out.onnx.bnfold-tmp-\(getpid())-ghijkl")
        let unrelated = scratch.file(".out.onnx.bnfold-tmp-notapid-mnopqr")
        for file in [dead, live, unrelated] { try Data("x".utf8).write(to: URL(fileURLWithPath: file)) }
        let r = try runBnfold([Self.resnet, "-o", scratch.file("out.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dead))
        #expect(FileManager.default.fileExists(atPath: live))
        #expect(FileManager.default.fileExists(atPath: unrelated))
    }

    /// SIGKILL mid-write: the temporaries are unnamed (O_TMPFILE), so
    /// nothing is left at all; where the file system cannot make unnamed
    /// files, the named temporary left behind is gone after the next run.
    @Test func aKilledRunLeavesNoTemporaryBehind() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("out.onnx")
        let killed = BackgroundProcess(TestPaths.testDriverBinary, [Self.resnet, "-o", out, "--external-data", "external"],
                                       environment: ["BNFOLD_TEST_PAUSE_BEFORE_COMMIT": "20000"])
        try killed.start()
        #expect(waitUntil(timeout: .seconds(60)) { temporaryFiles(of: killed, in: scratch.path).count == 2 })
        let unnamed = temporaryFiles(of: killed, in: scratch.path).allSatisfy { $0.hasSuffix(" (deleted)") }
        // Where this directory takes unnamed files, bnfold must use them.
        let probe = open(scratch.path, Int32(0o20000000) | O_DIRECTORY | O_WRONLY, mode_t(0o600))
        if probe >= 0 { close(probe); #expect(unnamed) }
        killed.send(SIGKILL)
        _ = try killed.wait(timeout: .seconds(60))
        if unnamed {
            #expect(scratch.contents().isEmpty)
        } else {
            #expect(scratch.contents().contains { $0.contains(".bnfold-tmp-") })
        }
        let r = try runBnfold([Self.resnet, "-o", scratch.file("other.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(scratch.contents() == ["other.onnx"])
    }
}

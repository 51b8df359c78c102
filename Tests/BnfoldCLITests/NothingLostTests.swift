import Foundation
import ONNXFile
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Hostile conditions while writing — a file size limit, a directory that
/// cannot hold files, an interrupt — end with exit 2 or the signal's status,
/// one line naming the file, and no output or temporary file left behind;
/// and the input is never changed.
@Suite struct NothingLostTests {
    static let resnet = TestPaths.fixture("torch_resnet18.onnx")

    // MARK: File size limit (ulimit -f): SIGXFSZ is ignored, the write fails with EFBIG.

    /// `ulimit -f 100` is 50 or 100 KiB: more than the 17 KiB model file that
    /// `--external-data external` writes, much less than the 2.7 MiB of data.
    /// With `keep` (this fixture has no external data) the model file hits
    /// the limit; with `external` the data file, written first, does.
    @Test(arguments: [("keep", ""), ("external", ".data")])
    func fileSizeLimit(mode: String, failingSuffix: String) throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("fused.onnx")
        let r = try runBnfold([Self.resnet, "-o", out, "--external-data", mode], fileSizeLimitBlocks: 100)
        #expect(r.signal == nil, "killed by signal \(r.signal ?? 0)")
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderrLines.count == 1, "\(r.stderr)")
        #expect(r.stderr == "bnfold: error: \(out + failingSuffix): cannot write: file too large (a file size limit was hit)\n")
        #expect(scratch.contents().isEmpty)
    }

    /// The data file is written in full, then the model hits the limit: both
    /// temporary files are removed. The input is conv2d_bn_external (768
    /// bytes of external data) with a 200 kB doc string, so its model file is
    /// well past `ulimit -f 20` (10 or 20 KiB) and its data file well under.
    @Test func fileSizeLimitAfterTheDataFile() throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("big.onnx")
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        model.docString = String(repeating: "bnfold ", count: 30_000)
        _ = try ModelWriter.write(model, to: input)
        let inputs = scratch.contents()
        #expect(inputs == ["big.onnx", "big.onnx.data"])
        let out = scratch.file("fused.onnx")
        let r = try runBnfold([input, "-o", out], fileSizeLimitBlocks: 20)
        #expect(r.signal == nil)
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(out): cannot write: file too large (a file size limit was hit)\n")
        #expect(scratch.contents() == inputs)
    }

    // MARK: Directories that cannot hold the output.

    @Test(arguments: ["conv2d_bn.onnx", "conv2d_bn_external.onnx"])
    func directoryThatTakesNoFiles(_ fixture: String) throws {
        let out = "/proc/bnfold-test-\(UUID().uuidString).onnx"
        let r = try runBnfold([TestPaths.fixture(fixture), "-o", out])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderrLines.count == 1, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("bnfold: error: \(out)"))
        #expect(r.stderr.hasSuffix(": cannot write: the directory '/proc' is not writable\n"))
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { $0.contains("bnfold") }
        #expect(leftovers.isEmpty)
    }

    @Test(arguments: ["o.onnx", "sub/o.onnx"])
    func directoryComponentIsAFile(_ below: String) throws {
        let scratch = ScratchDirectory()
        let file = scratch.file("plain")
        try Data("not a directory".utf8).write(to: URL(fileURLWithPath: file))
        for fixture in ["conv2d_bn.onnx", "conv2d_bn_external.onnx"] {
            let r = try runBnfold([TestPaths.fixture(fixture), "-o", file + "/" + below])
            #expect(r.status == 2)
            #expect(r.stderrLines.count == 1, "\(r.stderr)")
            #expect(r.stderr.hasSuffix(": cannot write: '\(file)' is not a directory\n"), "\(r.stderr)")
        }
        #expect(scratch.contents() == ["plain"])
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "not a directory")
    }

    @Test func outputIsADirectory() throws {
        let scratch = ScratchDirectory()
        try FileManager.default.createDirectory(atPath: scratch.file("dir"), withIntermediateDirectories: false)
        for out in [scratch.file("dir"), scratch.file("dir") + "/"] {
            let r = try runBnfold([TestPaths.fixture("conv2d_bn.onnx"), "-o", out])
            #expect(r.status == 2)
            #expect(r.stderr == "bnfold: error: \(out): cannot write: is a directory\n")
        }
        #expect(scratch.contents() == ["dir"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.file("dir")).isEmpty)
    }

    // MARK: Interrupted while writing: the temporary files go.

    enum Interruption: String, CaseIterable, Sendable {
        case interrupt, terminate, hangup

        var signal: Int32 {
            switch self {
            case .interrupt: SIGINT
            case .terminate: SIGTERM
            case .hangup: SIGHUP
            }
        }

        func send(to process: BackgroundProcess) {
            switch self {
            case .interrupt: process.process.interrupt()  // SIGINT
            case .terminate: process.process.terminate()  // SIGTERM
            case .hangup: process.send(SIGHUP)
            }
        }
    }


    /// bnfold pauses (test hook) with both temporary files complete — unnamed
    /// (O_TMPFILE) where the file system offers it, named otherwise — the
    /// signal arrives, and the directory is left empty.
    @Test(arguments: Interruption.allCases)
    func interruptRemovesTemporaryFiles(_ interruption: Interruption) throws {
        let scratch = ScratchDirectory()
        let bnfold = BackgroundProcess(testDriver: [Self.resnet, "-o", scratch.file("fused.onnx"), "--external-data", "external"],
                                       environment: ["BNFOLD_TEST_PAUSE_BEFORE_COMMIT": "20000"])
        try bnfold.start()
        let bothThere = waitUntil(timeout: .seconds(120)) { temporaryFiles(of: bnfold, in: scratch.path).count == 2 }
        #expect(bothThere, "temporary files: \(scratch.contents())")
        interruption.send(to: bnfold)
        let r = try bnfold.wait(timeout: .seconds(120))
        #expect(r.signal == interruption.signal || (r.signal == nil && r.status == 128 + interruption.signal),
                "status \(r.status), signal \(r.signal.map(String.init) ?? "none"), stderr: \(r.stderr)")
        #expect(r.stdout.isEmpty)
        #expect(scratch.contents().isEmpty)
    }

    /// Started with the signals blocked (as by a parent that spawns it from
    /// a thread that blocks them), bnfold unblocks them and still cleans up.
    @Test func inheritedBlockedSignalsAreUnblocked() throws {
        let scratch = ScratchDirectory()
        let bnfold = BackgroundProcess(testDriver: [Self.resnet, "-o", scratch.file("fused.onnx"), "--external-data", "external"],
                                       environment: ["BNFOLD_TEST_PAUSE_BEFORE_COMMIT": "20000"])
        try bnfold.start(blocking: [SIGINT, SIGTERM, SIGHUP])
        #expect(waitUntil(timeout: .seconds(120)) { temporaryFiles(of: bnfold, in: scratch.path).count == 2 })
        bnfold.process.terminate()
        let r = try bnfold.wait(timeout: .seconds(120))
        #expect(r.signal == SIGTERM, "status \(r.status), stderr: \(r.stderr)")
        #expect(scratch.contents().isEmpty)
    }

    /// A signal ignored by whoever started bnfold (`nohup`, a shell's
    /// background job) stays ignored: bnfold finishes and writes its output.
    @Test func ignoredHangupIsNotCaught() throws {
        let scratch = ScratchDirectory()
        let bnfold = BackgroundProcess("/bin/sh", ["-c", "trap '' HUP && exec \"$0\" \"$@\"", TestPaths.testDriverBinary,
                                                   Self.resnet, "-o", scratch.file("fused.onnx"), "--external-data", "external"],
                                       environment: ["BNFOLD_TEST_PAUSE_BEFORE_COMMIT": "2000"])
        try bnfold.start()
        let bothThere = waitUntil(timeout: .seconds(120)) { temporaryFiles(of: bnfold, in: scratch.path).count == 2 }
        #expect(bothThere)
        bnfold.send(SIGHUP)
        let r = try bnfold.wait(timeout: .seconds(120))
        #expect(r.signal == nil)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(scratch.contents() == ["fused.onnx", "fused.onnx.data"])
    }

    /// A failed or interrupted write leaves an earlier output, and its data
    /// file, exactly as they were.
    @Test func previousOutputSurvivesAFailedWrite() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("fused.onnx")
        let old = ["fused.onnx": Data("old model".utf8), "fused.onnx.data": Data("old data".utf8)]
        for (name, bytes) in old { try bytes.write(to: URL(fileURLWithPath: scratch.file(name))) }
        func unchanged() throws -> Bool {
            try scratch.contents() == old.keys.sorted()
                && old.allSatisfy { try Data(contentsOf: URL(fileURLWithPath: scratch.file($0.key))) == $0.value }
        }

        let limited = try runBnfold([Self.resnet, "-o", out, "--external-data", "external"], fileSizeLimitBlocks: 100)
        #expect(limited.status == 2)
        #expect(try unchanged())

        let bnfold = BackgroundProcess(testDriver: [Self.resnet, "-o", out, "--external-data", "external"],
                                       environment: ["BNFOLD_TEST_PAUSE_BEFORE_COMMIT": "20000"])
        try bnfold.start()
        #expect(waitUntil(timeout: .seconds(120)) { temporaryFiles(of: bnfold, in: scratch.path).count == 2 })
        bnfold.process.terminate()
        let r = try bnfold.wait(timeout: .seconds(120))
        #expect(r.signal == SIGTERM)
        #expect(try unchanged())
    }

    // MARK: The input is never modified.

    struct FileState: Equatable {
        var bytes: Data
        var mode: Int
        var modified: Date?
    }

    /// Every file under Fixtures/ (hidden ones too), by relative path.
    static func snapshotFixtures() throws -> [String: FileState] {
        let manager = FileManager.default
        var result: [String: FileState] = [:]
        let root = TestPaths.fixtures.path
        for relative in try manager.subpathsOfDirectory(atPath: root) {
            let path = root + "/" + relative
            let attributes = try manager.attributesOfItem(atPath: path)
            guard attributes[.type] as? FileAttributeType == .typeRegular else { continue }
            result[relative] = FileState(bytes: try Data(contentsOf: URL(fileURLWithPath: path)),
                                         mode: (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1,
                                         modified: attributes[.modificationDate] as? Date)
        }
        return result
    }

    @Test func foldingNeverModifiesTheInput() throws {
        let good = try TestPaths.manifest().compactMap { $0["file"] as? String }.filter { !$0.hasPrefix("bad/") }
        #expect(good.count > 30)
        let before = try Self.snapshotFixtures()
        let scratch = ScratchDirectory()
        for name in good {
            for mode in ["keep", "external"] {
                let out = scratch.file(mode + "-" + name.replacingOccurrences(of: "/", with: "_"))
                let r = try runBnfold([TestPaths.fixture(name), "-o", out, "--external-data", mode])
                #expect(r.status == 0, "\(name) \(mode): \(r.stderr)")
            }
        }
        let after = try Self.snapshotFixtures()
        #expect(Set(after.keys) == Set(before.keys), "files appeared or disappeared in Fixtures/")
        for (path, state) in before {
            #expect(after[path] == state, "\(path) changed")
        }
    }
}

/// The input's external data files are never replaced, whatever `-o` says.
@Suite struct InputDataFileTests {
    /// conv2d_bn_external.onnx under another name, next to its data file
    /// (which keeps its name: the model's tensors point at it).
    static func copyExternalFixture(as name: String, into scratch: ScratchDirectory) throws {
        try FileManager.default.copyItem(atPath: TestPaths.fixture("conv2d_bn_external.onnx"), toPath: scratch.file(name))
        try FileManager.default.copyItem(atPath: TestPaths.fixture("conv2d_bn_external.onnx.data"),
                                         toPath: scratch.file("conv2d_bn_external.onnx.data"))
    }

    /// A model renamed away from its data file's name: `bnfold a.onnx -o
    /// model.onnx` must not write over `model.onnx.data`, which is a.onnx's data.
    @Test func outputDoesNotReplaceTheInputsDataFile() throws {
        let scratch = ScratchDirectory()
        try Self.copyExternalFixture(as: "a.onnx", into: scratch)
        // a.onnx's tensors point at conv2d_bn_external.onnx.data; fold to the
        // name whose default data file that is.
        let data = try Data(contentsOf: URL(fileURLWithPath: scratch.file("conv2d_bn_external.onnx.data")))
        let r = try runBnfold([scratch.file("a.onnx"), "-o", scratch.file("conv2d_bn_external.onnx"), "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("conv2d_bn_external.onnx.data"))) == data)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let written = try #require(object["written"] as? [String: Any])
        #expect(written["external_data_file"] as? String == "conv2d_bn_external.onnx-1.data")
        #expect((object["notes"] as? [String])?.contains { $0.contains("holds the input model's data") } == true)
        // And the input still reads with its original weights.
        let again = try runBnfold([scratch.file("a.onnx"), "-o", scratch.file("check.onnx"), "--passes", "none"])
        #expect(again.status == 0)
    }

    @Test func outputNamingTheInputsDataFileIsRefused() throws {
        let scratch = ScratchDirectory()
        try Self.copyExternalFixture(as: "a.onnx", into: scratch)
        let r = try runBnfold([scratch.file("a.onnx"), "-o", scratch.file("conv2d_bn_external.onnx.data"), "--in-place"])
        #expect(r.status == 2)
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.contains("is an external data file of the input model"))
    }

    /// A Conv whose BatchNormalization parameters alone live in `bn.data`
    /// (made with the onnx package: scale, bias, mean, var of 4 channels,
    /// 64 bytes). The fold removes every tensor in that file, so the folded
    /// model no longer names it: the guard must list the files of the model
    /// as read, not as folded (it did not, and `-o bn.data` overwrote it).
    static let bnExternalOnlyModel = "CAg6sgYKFQoBeAoBdxIBYxoEY29udiIEQ29udgoqCgFjCgFzCgFiCgFtCgF2EgF5GgJibiISQmF0Y2hOb3JtYWxpemF0aW9uEgFnKsADCAQIAwgDCAMQAUIBd0qwA2nwsD6RVVI/DC+pPtvNpr9nxWc/NYvkPsR1Cb8oxBQ/PKm6PomYlj7D1eg8YvULP0GIPL/e0Sa+WNj2vvxNGT+msyI95LyVvicrSL+0roO+yGYFPNMbjb7io6U/WNyAP7CDLcAwy/G/dfcyvlcp2L47xVo+pIlePqyKB0CyVo6/clXBvsW8AkBUjiU/hb4pP+yVA78h9NK/4XsrPsdC3z3fGZ2/8ecuv6OLk70+23G/xEHJvZuMwz3gwhE9VZwBv+D/Fz+EI2Q/O0akPol3Ub+QTTs/YF4Av6wQYT9UMIm/hhpqPx1cpLwB15+/bregvlqaXT1Oq4s+rnB7v2a+jb/jX0w+zvnuvmIocT7fb0I/dwvTvyk/gj47wZw/cFWYvouRT78Nk0A/vsOBPphYZT8dwLC+Oay9v1NN4b2WQ+S+n3tGP7BHRj6rv9C/G/uYvwBAYj8VBS4//eYjv8Z3ibo4IuQ+sdLvPmlRYD8WUoM+XDXCvbyHhL6VIoc//w0QwKn7Db4eKwc91nG2v4xmqj5auia/L8lcPzabAL6gTSs/EQOcP1kPxD5DL2C/MdXBvyo5CAQQAUIBc2oTCghsb2NhdGlvbhIHYm4uZGF0YWoLCgZvZmZzZXQSATBqDAoGbGVuZ3RoEgIxNnABKjoIBBABQgFiahMKCGxvY2F0aW9uEgdibi5kYXRhagwKBm9mZnNldBICMTZqDAoGbGVuZ3RoEgIxNnABKjoIBBABQgFtahMKCGxvY2F0aW9uEgdibi5kYXRhagwKBm9mZnNldBICMzJqDAoGbGVuZ3RoEgIxNnABKjoIBBABQgF2ahMKCGxvY2F0aW9uEgdibi5kYXRhagwKBm9mZnNldBICNDhqDAoGbGVuZ3RoEgIxNnABWhsKAXgSFgoUCAESEAoCCAEKAggDCgIICAoCCAhiGwoBeRIWChQIARIQCgIIAQoCCAQKAggGCgIIBkIECgAQDw=="
    static let bnExternalOnlyData = "XkM+PxHCQT+WvBI/Y/9BP1UBRL7/JVo/R/gKPe9FYTyy7ja/O2vwPr9VhL+7dyo/LTjhP6J7yz/WFIY/kxeWPw=="

    @Test func outputNamingADataFileTheFoldStopsUsingIsRefused() throws {
        let scratch = ScratchDirectory()
        let data = try #require(Data(base64Encoded: Self.bnExternalOnlyData))
        try #require(Data(base64Encoded: Self.bnExternalOnlyModel)).write(to: URL(fileURLWithPath: scratch.file("a.onnx")))
        try data.write(to: URL(fileURLWithPath: scratch.file("bn.data")))
        let r = try runBnfold([scratch.file("a.onnx"), "-o", scratch.file("bn.data"), "--in-place"])
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(scratch.file("bn.data")): is an external data file of the input model ('\(scratch.path)/bn.data')\n")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("bn.data"))) == data)
        // The same model folds normally to another name.
        let ok = try runBnfold([scratch.file("a.onnx"), "-o", scratch.file("b.onnx")])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("bn.data"))) == data)
    }

    /// `--external-data external -o z.onnx` next to an input whose data file
    /// is `z.onnx.data`: the output's data goes to a free name.
    @Test func externalLayoutNeverWritesTheInputsDataFile() throws {
        let scratch = ScratchDirectory()
        try Self.copyExternalFixture(as: "a.onnx", into: scratch)
        let data = try Data(contentsOf: URL(fileURLWithPath: scratch.file("conv2d_bn_external.onnx.data")))
        let r = try runBnfold([scratch.file("a.onnx"), "-o", scratch.file("conv2d_bn_external.onnx"),
                               "--external-data", "external", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("conv2d_bn_external.onnx.data"))) == data)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let written = try #require(object["written"] as? [String: Any])
        #expect(written["external_data_file"] as? String == "conv2d_bn_external.onnx-1.data")
        let again = try runBnfold([scratch.file("a.onnx"), "-o", scratch.file("check.onnx"), "--passes", "none"])
        #expect(again.status == 0, "\(again.stderr)")
    }

    /// In place: the model file is the commit point; its data goes to a new
    /// file, so an interruption can never pair the old model with new weights.
    @Test func inPlaceWithExternalDataWritesANewDataFile() throws {
        let scratch = ScratchDirectory()
        try FileManager.default.copyItem(atPath: TestPaths.fixture("conv2d_bn_external.onnx"), toPath: scratch.file("m.onnx"))
        try FileManager.default.copyItem(atPath: TestPaths.fixture("conv2d_bn_external.onnx.data"),
                                         toPath: scratch.file("conv2d_bn_external.onnx.data"))
        // Make m.onnx's own default data file name the one it reads.
        let first = try runBnfold([scratch.file("m.onnx"), "-o", scratch.file("m2.onnx"), "--passes", "none"])
        #expect(first.status == 0)
        let oldData = try Data(contentsOf: URL(fileURLWithPath: scratch.file("m2.onnx.data")))
        let r = try runBnfold([scratch.file("m2.onnx"), "-o", scratch.file("m2.onnx"), "--in-place"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("m2.onnx.data"))) == oldData)
        #expect(FileManager.default.fileExists(atPath: scratch.file("m2.onnx-1.data")))
        #expect(r.stdout.contains("note: 'm2.onnx.data' holds the input model's data"))
    }
}

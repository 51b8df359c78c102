// Fuzz target for everything a model file reaches: the reader (wire-format
// scan, compaction, protobuf-c unpack, decoding, tensor validation), model
// validation, the fold passes, the fold's verification (pair and whole-model
// checks: the reference runtime and the comparison) under a memory budget,
// and the writer's encoder.
//
// `make fuzz` builds this with `-sanitize=fuzzer,address` (libFuzzer provides
// main) and runs it on a corpus seeded with Fixtures/. Built normally, the
// same file has a main that replays inputs given as arguments, which is how
// a crash is reproduced: `.build/debug/FuzzReader crash-…`.

import Equivalence
import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph
import ReferenceRuntime

/// One input: any outcome but a crash, a hang or a sanitizer report is fine.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    // External data is looked up next to this (nonexistent) path, so a
    // location in the input can only ever name a missing file.
    guard var model = try? ModelReader.read(bytes: bytes, name: "/nonexistent-bnfold-fuzz/input.onnx") else { return 0 }
    guard (try? model.validate()) != nil else { return 0 }
    let original = model
    let records = (try? PassManager(passes: BuiltinPasses.all).run(on: &model))?.records ?? []
    // Under 256 MiB (libFuzzer's RSS limit is 2 GiB): a tiny file that asks
    // for more must be refused by the budget, not take the memory.
    fuzzBudget.enforce {
        _ = FoldVerifier.verify(records, irVersion: model.irVersion, opsetImports: model.opsetImports)
        _ = FoldVerifier.verifyWholeModel(original: original, folded: model)
    }
    _ = try? ModelWriter.packedSize(model)
    return 0
}

let fuzzBudget = MemoryBudget(bytes: 256 << 20)

#if FUZZING
/// libFuzzer's driver, used instead of its own `main` so that this target
/// has the `@main` SwiftPM expects of an executable.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32
#endif

@main
enum FuzzReaderMain {
    static func main() {
        #if FUZZING
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
        #else
        // Replays each file named on the command line through the fuzz target.
        for path in CommandLine.arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("cannot read \(path)")
                continue
            }
            data.withUnsafeBytes { raw in
                _ = fuzzOneInput(raw.bindMemory(to: UInt8.self).baseAddress, raw.count)
            }
            print("ok \(path)")
        }
        #endif
    }
}

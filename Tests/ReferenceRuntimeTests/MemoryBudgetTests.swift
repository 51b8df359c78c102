import Foundation
import Testing
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

/// The runtime's memory budget: sizes parse as documented, refusals are
/// errors that carry their numbers, and a run's account goes back to what
/// its caller holds when it returns.
@Suite("Memory budget")
struct MemoryBudgetTests {
    @Test func sizesParse() {
        #expect(MemoryBudget(parsing: "2048")?.bytes == 2048)
        #expect(MemoryBudget(parsing: "64k")?.bytes == 64 << 10)
        #expect(MemoryBudget(parsing: "512M")?.bytes == 512 << 20)
        #expect(MemoryBudget(parsing: "512MB")?.bytes == 512 << 20)
        #expect(MemoryBudget(parsing: "4G")?.bytes == 4 << 30)
        #expect(MemoryBudget(parsing: "1.5GiB")?.bytes == 3 << 29)
        #expect(MemoryBudget(parsing: " 2T ")?.bytes == 2 << 40)
        for bad in ["", "lots", "-1", "-1G", "inf", "nan", "1e30", "4X", "G"] {
            #expect(MemoryBudget(parsing: bad) == nil, "\(bad)")
        }
    }

    @Test func sizesFormat() {
        #expect(MemoryBudget.format(300) == "300 B")
        #expect(MemoryBudget.format(1 << 30) == "1 GiB")
        #expect(MemoryBudget.format(3 << 29) == "1.5 GiB")
        #expect(MemoryBudget.format(512 << 20) == "512 MiB")
    }

    @Test func environmentSetsTheDefault() throws {
        #expect(try MemoryBudget.processDefault(environment: ["BNFOLD_MAX_MEMORY": "300M"]).bytes == 300 << 20)
        #expect(throws: MemoryBudgetError.self) { try MemoryBudget.processDefault(environment: ["BNFOLD_MAX_MEMORY": "much"]) }
        // Without it: half of what the process can get, never more than the machine has.
        let machine = try MemoryBudget.processDefault(environment: [:]).bytes
        #expect(machine > 0)
        #expect(machine == MemoryBudget.availableMemory() / 2)
        #expect(machine <= Int(clamping: ProcessInfo.processInfo.physicalMemory) / 2)
    }

    /// Relu on 1000 float32 values: 4000 bytes of input, 4000 of output.
    func reluGraph() -> (Interpreter, RuntimeTensor)? {
        let node = Node(opType: "Relu", inputs: ["x"], outputs: ["y"], name: "relu")
        var graph = Graph(name: "g", nodes: [node])
        graph.inputs = [ValueInfo(name: "x")]
        graph.outputs = [ValueInfo(name: "y")]
        guard let interpreter = try? Interpreter(graph: graph, opset: 17) else { return nil }
        return (interpreter, tensor([1000], (0..<1000).map { Double($0) - 500 }))
    }

    @Test func aRunOverTheBudgetIsARuntimeErrorWithItsNumbers() throws {
        let (interpreter, x) = try #require(reluGraph())
        let error = MemoryBudget(bytes: 3000).enforce {
            MemoryBudget.measured { () -> RuntimeError? in
                do { _ = try interpreter.run(inputs: ["x": x]); return nil } catch { return error as? RuntimeError }
            }
        }
        let limit = try #require(error?.memory)
        #expect(limit.budget == 3000)
        #expect(limit.requested == 4000)   // room for an output as large as the input
        #expect(error?.node == "relu")
        #expect(error?.description == "node 'relu' (Relu): needs 3.9 KiB more with 0 B already held, over the memory budget of 2.9 KiB (--max-memory or BNFOLD_MAX_MEMORY raise it)")
    }

    @Test func aRunWithinTheBudgetGivesTheSameValues() throws {
        let (interpreter, x) = try #require(reluGraph())
        let free = try interpreter.run(inputs: ["x": x])
        let bounded = try MemoryBudget(bytes: 8000).enforce { try MemoryBudget.measured { try interpreter.run(inputs: ["x": x]) } }
        #expect(bounded == free)
    }

    /// Runs release what they made: a thousand runs in one account fit a
    /// budget that holds one run's tensors, when the caller releases what
    /// it was given back.
    @Test func runsReleaseWhatTheyMade() throws {
        let (interpreter, x) = try #require(reluGraph())
        try MemoryBudget(bytes: 12_000).enforce {
            try MemoryBudget.measured {
                try RuntimeTensor.hold([x])
                for _ in 0..<1000 {
                    let y = try interpreter.run(inputs: ["x": x])
                    #expect(MemoryLedger.current?.held == 8000)   // x and y
                    RuntimeTensor.release(y.values)
                }
                #expect(MemoryLedger.current?.held == 4000)
            }
        }
    }

    /// Shapes computed from data are weighed before anything is allocated:
    /// a ConstantOfShape of 2³⁰ elements under a 1 MiB budget is refused
    /// at once (it would otherwise allocate 4 GiB).
    @Test func computedShapesAreWeighedFirst() throws {
        let error = MemoryBudget(bytes: 1 << 20).enforce {
            MemoryBudget.measured { () -> RuntimeError? in
                do { _ = try runNode("ConstantOfShape", [ints([1 << 15, 1 << 15])]); return nil } catch { return error as? RuntimeError }
            }
        }
        #expect(error?.memory?.requested == 8 << 30)
        // Without a budget the same node is bounded only by the element limit.
        #expect(throws: Never.self) { try runNode("ConstantOfShape", [ints([1 << 10, 1 << 10])]) }
    }

    /// A request the budget allows but the allocator refuses is an error,
    /// not Swift's allocation abort.
    @Test func theAllocatorsRefusalIsAnError() {
        #expect(throws: MemoryBudgetExceeded(requested: Int.max / 2, held: 0, budget: nil)) {
            try MemoryLedger.probe(Int.max / 2)
        }
        #expect(throws: Never.self) { try MemoryLedger.probe(MemoryLedger.probeThreshold) }
    }
}

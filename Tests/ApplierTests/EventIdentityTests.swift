import Testing
import WebhookModel
@testable import TaskModel
import ApplierCore

@Suite struct EventIdentityTests {
    let webhook = Webhook(event: .created, timestamp: Timestamp(microsecondsSinceEpoch: 1_743_531_825_000_000),
                          userId: "1", taskId: "42", content: "Buy milk é", isCompleted: false)

    /// The identity is the event log's primary key: it must never change
    /// between versions, or a replay would store every event twice.
    @Test func isStableAcrossVersions() {
        // SHA-256 of the length-prefixed fields, computed independently (Python hashlib).
        #expect(EventIdentity.uuid(of: webhook) == "9fc4e6fc-4dfc-5284-f260-fdf8c8dcbbeb")
    }

    @Test func everyFieldOfTheIdentityCounts() {
        var variants = [webhook]
        var w = webhook; w.event = .updated; variants.append(w)
        w = webhook; w.taskId = "43"; variants.append(w)
        w = webhook; w.userId = "2"; variants.append(w)
        w = webhook; w.content = "Buy milk"; variants.append(w)
        w = webhook; w.isCompleted = true; variants.append(w)
        w = webhook; w.timestamp = Timestamp(microsecondsSinceEpoch: 1_743_531_825_000_001); variants.append(w)
        // Length prefixes keep field boundaries apart: ("1", "42") is not ("14", "2").
        w = webhook; w.userId = "14"; w.taskId = "2"; variants.append(w)
        #expect(Set(variants.map(EventIdentity.uuid(of:))).count == variants.count)
    }

    /// Appliers of every version must agree on which lock guards which task.
    @Test func taskPartitionsAreStableAcrossVersions() {
        // FNV-1a 64 modulo 16, computed independently (Python).
        #expect(["42", "task-0000001", "ünï", ""].map(TaskPartition.of(task:)) == [3, 14, 6, 5])
    }
}

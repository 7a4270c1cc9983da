import WebhookModel

/// A random history of one task: one or more created (conflicts), updates
/// with content and completion flips, maybe deletions, maybe another user's
/// meddling, timestamps that collide on purpose.
public func randomHistory(taskId: String, users: [String] = ["u1", "u2"], using g: inout SeededGenerator) -> [Webhook] {
    var events: [Webhook] = []
    let owner = users.randomElement(using: &g)!
    let base = Int64.random(in: 0...1_000, using: &g)
    func time(_ g: inout SeededGenerator) -> Timestamp {
        Timestamp(microsecondsSinceEpoch: 1_750_000_000_000_000 + (base + Int64.random(in: 0...40, using: &g)) * 1_000_000)
    }
    for _ in 0..<Int.random(in: 0...2, using: &g) {
        events.append(Webhook(event: .created, timestamp: time(&g), userId: owner, taskId: taskId, content: "c\(Int.random(in: 0...3, using: &g))", isCompleted: Bool.random(using: &g)))
    }
    for _ in 0..<Int.random(in: 0...6, using: &g) {
        let user = Int.random(in: 0..<10, using: &g) == 0 ? users.randomElement(using: &g)! : owner
        events.append(Webhook(event: .updated, timestamp: time(&g), userId: user, taskId: taskId, content: "u\(Int.random(in: 0...5, using: &g))", isCompleted: Bool.random(using: &g)))
    }
    if Int.random(in: 0..<3, using: &g) == 0 {
        events.append(Webhook(event: .deleted, timestamp: time(&g), userId: owner, taskId: taskId, content: "", isCompleted: false))
    }
    return events
}

import Testing
import TestSupport
import WebhookModel
@testable import ApplierCore
@testable import TaskModel

func at(_ minutes: Int) -> Timestamp {
    Timestamp(microsecondsSinceEpoch: 1_750_000_000_000_000 + Int64(minutes) * 60_000_000)
}

func event(_ kind: WebhookEvent, _ minute: Int, id: String = "t1", user: String = "u1", content: String = "c", done: Bool = false) -> Webhook {
    Webhook(event: kind, timestamp: at(minute), userId: user, taskId: id, content: content, isCompleted: done)
}

@Suite struct TaskRulesTests {
    @Test func createdMakesTheTask() {
        let (state, dispositions) = TaskRules.fold([event(.created, 0, content: "Buy milk")])
        #expect(state == TaskState(taskId: "t1", userId: "u1", content: "Buy milk", createdDate: at(0), completedDate: nil, deletedDate: nil))
        #expect(dispositions.values.allSatisfy { $0 == .applied })
    }

    @Test func duplicatesChangeNothing() {
        let events = [event(.created, 0), event(.updated, 1, content: "x", done: true)]
        #expect(TaskRules.fold(events).state == TaskRules.fold(events + events + [events[1]]).state)
    }

    @Test func earliestCreatedWinsAndTheOthersAreConflicts() {
        let early = event(.created, 0, content: "early"), late = event(.created, 5, content: "late")
        let (state, dispositions) = TaskRules.fold([late, early])
        #expect(state?.content == "early")
        #expect(state?.createdDate == at(0))
        #expect(dispositions[late] == .rejectedConflict)
        #expect(dispositions[early] == .applied)
    }

    @Test func simultaneousCreatedEventsTieBreakByIdentityBytes() {
        let a = event(.created, 0, content: "apple"), b = event(.created, 0, content: "banana")
        #expect(TaskRules.fold([b, a]).state?.content == "apple")
        #expect(TaskRules.fold([a, b]).state?.content == "apple")
    }

    @Test func contentFollowsTheLatestEventThatCarriesIt() {
        let events = [event(.created, 0, content: "v0"), event(.updated, 10, content: "v10"), event(.updated, 5, content: "v5")]
        #expect(TaskRules.fold(events).state?.content == "v10")
    }

    @Test func completedDateIsTheLastTransitionToCompleted() {
        let events = [
            event(.created, 0), event(.updated, 1, done: true), event(.updated, 2, done: true),
            event(.updated, 3, done: false), event(.updated, 4, done: true), event(.updated, 5, done: true),
        ]
        #expect(TaskRules.fold(events.shuffled()).state?.completedDate == at(4))
        // Un-completing clears it.
        #expect(TaskRules.fold(events + [event(.updated, 6, done: false)]).state?.completedDate == nil)
    }

    @Test func createdAsCompletedIsCompletedAtCreation() {
        #expect(TaskRules.fold([event(.created, 3, done: true), event(.updated, 4, done: true)]).state?.completedDate == at(3))
    }

    @Test func earliestDeletionWinsAndLaterEventsChangeNothing() {
        let events = [
            event(.created, 0, content: "a"), event(.deleted, 9), event(.deleted, 7),
            event(.updated, 8, content: "too late", done: true), event(.updated, 7, content: "just in time"),
        ]
        let (state, dispositions) = TaskRules.fold(events)
        #expect(state?.deletedDate == at(7))
        #expect(state?.content == "just in time")
        #expect(state?.completedDate == nil)
        #expect(dispositions[events[3]] == .applied)
    }

    @Test func anotherUsersEventsAreRejected() {
        let events = [event(.created, 0, content: "mine"), event(.updated, 1, user: "u2", content: "stolen", done: true), event(.deleted, 2, user: "u2")]
        let (state, dispositions) = TaskRules.fold(events)
        #expect(state == TaskState(taskId: "t1", userId: "u1", content: "mine", createdDate: at(0), completedDate: nil, deletedDate: nil))
        #expect(dispositions[events[1]] == .rejectedOwner)
        #expect(dispositions[events[2]] == .rejectedOwner)
    }

    @Test func updatesBeforeTheirCreatedArePendingThenApplied() {
        let update = event(.updated, 5, content: "later", done: true)
        let (none, waiting) = TaskRules.fold([update, event(.deleted, 9)])
        #expect(none == nil)
        #expect(waiting.values.allSatisfy { $0 == .pending })
        let (state, applied) = TaskRules.fold([update, event(.deleted, 9), event(.created, 0)])
        #expect(state?.content == "later")
        #expect(state?.completedDate == at(5))
        #expect(state?.deletedDate == at(9))
        #expect(applied[update] == .applied)
    }

    @Test func asOfIgnoresWhatHappenedLater() {
        let events = [event(.created, 0), event(.updated, 5, done: true), event(.updated, 8, done: false), event(.deleted, 10)]
        #expect(TaskRules.fold(events, asOf: at(6)).state?.completedDate == at(5))
        #expect(TaskRules.fold(events, asOf: at(6)).state?.deletedDate == nil)
        #expect(TaskRules.fold(events, asOf: at(10)).state?.deletedDate == at(10))
        #expect(TaskRules.fold(events, asOf: at(-1)).state == nil)
    }

    @Test func stateIsAFunctionOfTheSetOfEvents() {
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<300 {
            let history = randomHistory(taskId: "t", using: &generator)
            let expected = TaskRules.fold(history).state
            for _ in 0..<5 {
                var shuffled = history.shuffled(using: &generator)
                shuffled += shuffled.prefix(Int.random(in: 0...3, using: &generator))
                #expect(TaskRules.fold(shuffled).state == expected)
            }
        }
    }

    /// Going on from a stored state with events that all come later gives
    /// what folding every event again gives: the row and each verdict.
    @Test func extendingAStateWithLaterEventsIsTheFoldOfAll() {
        var generator = SeededGenerator(seed: 8)
        var extended = 0
        for _ in 0..<2000 {
            var history = randomHistory(taskId: "t", using: &generator)
            history += history.prefix(Int.random(in: 0...2, using: &generator))  // duplicates too
            let times = Set(history.map(\.timestamp)).sorted()
            guard let cut = times.randomElement(using: &generator) else { continue }
            let earlier = history.filter { $0.timestamp <= cut }
            var seen = Set<Webhook>()
            let later = history.filter { $0.timestamp > cut && seen.insert($0).inserted }
            guard let stored = TaskRules.fold(earlier).state, !later.isEmpty else { continue }
            let (state, verdicts) = TaskRules.extend(stored, with: later)
            let (all, expected) = TaskRules.fold(history)
            #expect(state == all, "\(history)")
            for (event, verdict) in zip(later, verdicts) { #expect(verdict == expected[event], "\(event)") }
            // One event at a time, in the rules' order, in place (the applier's form for a task's one new event).
            var stepwise = stored
            for event in later.sorted(by: TaskRules.precedes) {
                #expect(TaskRules.extend(&stepwise, with: event) == expected[event], "\(event)")
            }
            #expect(stepwise == all, "\(history)")
            extended += 1
        }
        #expect(extended > 500)
    }

    /// A task's only event folded without an array is the fold of that one event.
    @Test func oneEventFoldsAsTheFoldOfItAlone() {
        var generator = SeededGenerator(seed: 9)
        var created = 0
        for _ in 0..<300 {
            for event in randomHistory(taskId: "t", using: &generator) {
                let alone = TaskRules.foldState(of: event)
                let expected = TaskRules.foldState([event])
                #expect(alone.state == expected.state && alone.creation == expected.creation, "\(event)")
                if alone.state != nil { created += 1 }
            }
        }
        #expect(created > 100)
    }
}

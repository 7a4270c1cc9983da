import ArchiveSegments
import Foundation
import Testing
import TestSupport
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// The archive's segments on a real directory: which files are segments of
/// `ARCHIVE_PATH` (whatever it is called), in what order, and what retention deletes.
@Suite struct ArchiveSegmentsTests {
    func write(_ path: String, _ text: String = "x\n") throws {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    @Test func namesRoundTripAndOnlyExactSegmentNamesCount() throws {
        let time = try Timestamp(parsing: "2026-11-25T06:53:00.123456Z")
        #expect(ArchiveSegments.suffix(time) == "20261125T065300.123456Z")
        #expect(ArchiveSegments.time(ofSuffix: "20261125T065300.123456Z") == time)
        for decoy in ["20261125T065300.123456", "20261125T065300Z", "20261125T065300.123456Z.gz", "bak", "20261325T065300.123456Z", "2026112xT065300.123456Z"] {
            #expect(ArchiveSegments.time(ofSuffix: Substring(decoy)) == nil, "\(decoy)")
        }
    }

    @Test func pendingAndAppliedAreThisArchivesSegmentsOldestFirstAndRetentionDeletesOnlyOldVerifiedOnes() throws {
        let dir = try makeTemporaryDirectory("segments") + "/hooks"
        try FileManager.default.createDirectory(atPath: dir + "/applied", withIntermediateDirectories: true)
        let archive = ArchiveSegments(path: dir + "/incoming.log")
        try write(dir + "/incoming.log.20261201T000000.000002Z")
        try write(dir + "/incoming.log.20261130T235959.999999Z")
        // Not segments of this archive: never listed, moved or deleted.
        for decoy in ["incoming.log", "incoming.log.bak", "other.log.20261130T000000.000000Z", "incoming.log.20261130T000000.000000Z.tmp"] {
            try write(dir + "/" + decoy)
        }
        try FileManager.default.createDirectory(atPath: dir + "/incoming.log.20261129T000000.000000Z", withIntermediateDirectories: false)
        #expect(try archive.pending().map { ($0.path as NSString).lastPathComponent } == ["incoming.log.20261130T235959.999999Z", "incoming.log.20261201T000000.000002Z"])

        let now = try Timestamp(parsing: "2026-12-02T12:00:00Z")
        try write(dir + "/applied/incoming.log.20261120T000000.000000Z")   // 12.5 days: past 7
        try write(dir + "/applied/incoming.log.20261128T000000.000000Z")   // 4.5 days: kept
        try write(dir + "/applied/archive.ndjson.20200101T000000.000000Z") // another archive's: kept
        let pruned = try archive.prune(retentionDays: 7, now: now)
        #expect(pruned.map { ($0.path as NSString).lastPathComponent } == ["incoming.log.20261120T000000.000000Z"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/applied").sorted() == ["archive.ndjson.20200101T000000.000000Z", "incoming.log.20261128T000000.000000Z"])
        #expect(try archive.prune(retentionDays: 0, now: now).isEmpty, "0 keeps every one")

        for segment in try archive.pending() { try archive.markVerified(segment) }
        #expect(try archive.pending().isEmpty)
        #expect(try archive.applied().count == 3)
        // The live file becomes a segment named for when it was sealed; an empty one does not.
        let sealed = try #require(try archive.seal(at: now))
        #expect(sealed.path == dir + "/incoming.log.20261202T120000.000000Z")
        #expect(!FileManager.default.fileExists(atPath: dir + "/incoming.log"))
        try write(dir + "/incoming.log", "")
        #expect(try archive.seal(at: now) == nil)
    }
}

/// `applier --replay-archive` on a real archive and a real PostgreSQL.
@Suite struct ArchiveReplayTests {
    let cluster = PostgresCluster.shared

    func lines(_ ids: [String]) -> String {
        String(decoding: stream(ids.map { event(.created, 0, id: $0) }), as: UTF8.self)
    }

    func replay(_ db: String, _ archive: String, _ arguments: [String], environment: [String: String] = [:]) throws -> ApplierRun {
        try runApplier([], conninfo: db, arguments: ["--replay-archive"] + arguments, environment: ["ARCHIVE_PATH": archive].merging(environment) { $1 })
    }

    @Test func everyPendingSegmentIsAppliedThenVerifiedAndOldVerifiedOnesAreDeletedWhateverTheArchiveIsCalled() throws {
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        let dir = try makeTemporaryDirectory("replay") + "/spool"
        try FileManager.default.createDirectory(atPath: dir + "/applied", withIntermediateDirectories: true)
        let archive = dir + "/hooks.ndjson"
        try lines(["a1", "a2"]).write(toFile: archive + ".20261201T100000.000000Z", atomically: false, encoding: .utf8)
        try (lines(["b1"]) + "not json\n").write(toFile: archive + ".20261201T110000.000000Z", atomically: false, encoding: .utf8)
        try lines(["c1"]).write(toFile: archive, atomically: false, encoding: .utf8)
        try "old\n".write(toFile: dir + "/applied/hooks.ndjson.20200101T000000.000000Z", atomically: false, encoding: .utf8)
        try "kept\n".write(toFile: dir + "/hooks.ndjson.bak", atomically: false, encoding: .utf8)

        let run = try replay(db, archive, ["--seal-archive"], environment: ["ARCHIVE_RETENTION_DAYS": "30"])
        #expect(run.exitCode == 0, "\(run.stderr)")
        #expect(Set(try taskRows(db).map { $0[0] }) == ["a1", "a2", "b1", "c1"])
        #expect(run.rejects.count == 1 && run.rejects[0].contains("not json"), "a segment's rejects are written as live: \(run.rejects)")
        let applied = try FileManager.default.contentsOfDirectory(atPath: dir + "/applied").sorted()
        #expect(applied.count == 3 && applied.allSatisfy { $0.hasPrefix("hooks.ndjson.2026") }, "\(applied)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["applied", "hooks.ndjson.bak"])

        // Again: nothing pending, nothing to do.
        let again = try replay(db, archive, [])
        #expect(again.exitCode == 0)
        #expect(!again.stderr.contains("replaying"))
    }

    @Test func aSegmentThatCannotBeAppliedStaysPendingWithEveryOneAfterIt() throws {
        let dir = try makeTemporaryDirectory("replay")
        let archive = dir + "/archive.ndjson"
        try lines(["a1"]).write(toFile: archive + ".20261201T100000.000000Z", atomically: false, encoding: .utf8)
        try lines(["b1"]).write(toFile: archive + ".20261201T110000.000000Z", atomically: false, encoding: .utf8)
        // A database without the schema: the applier stops for good (exit 1), nothing is verified.
        let bare = cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false))
        let run = try replay(bare, archive, [])
        #expect(run.exitCode == 1)
        #expect(run.stderr.contains("stays pending"), "\(run.stderr)")
        #expect(try ArchiveSegments(path: archive).pending().count == 2)
        #expect(try ArchiveSegments(path: archive).applied().isEmpty)
    }

    @Test func replayNeedsAnArchiveAndSealNeedsReplay() throws {
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        let none = try runApplier([], conninfo: db, arguments: ["--replay-archive"], environment: ["ARCHIVE_PATH": ""])
        #expect(none.exitCode == 64 && none.stderr.contains("--replay-archive needs the archive"), "\(none.stderr)")
        let seal = try runApplier([], conninfo: db, arguments: ["--seal-archive"])
        #expect(seal.exitCode == 64 && seal.stderr.contains("--seal-archive goes with --replay-archive"), "\(seal.stderr)")
    }
}

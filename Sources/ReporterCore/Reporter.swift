import Foundation
import Logging
import WebhookModel

/// One reporter run: takes the single-runner lock, picks the window (the
/// cron cursor up to the watermark, or the one asked for), and under one
/// database snapshot rewrites the earlier reports that late events changed
/// and writes one file per user with something to report in the window. In
/// cron mode it then writes the manifest and only after that records the
/// run, so a run that dies anywhere is redone, whole, by the next.
public struct Reporter {
    /// How the run ended; the executable exits with `code`.
    public enum Outcome: Equatable, Sendable {
        case done(Summary)
        /// Another run holds the lock (exit 75).
        case locked
        /// The last recorded run ends at or after the watermark: nothing to do.
        case nothingToDo(lastEnd: Timestamp, watermark: Timestamp)
    }

    /// What a run did, for the final log line and the manifest.
    public struct Summary: Equatable, Sendable, CustomStringConvertible {
        public var window: ReportWindow
        public var users = 0
        public var files = 0
        public var tasks = 0
        /// Report files of earlier windows rewritten for late events.
        public var corrections = 0
        /// Events committed since the previous run and timestamped in windows already reported.
        public var lateEvents = 0
        /// Of those, the ones older than the correction horizon (counted, not corrected).
        public var beyondHorizon = 0
        /// Time spent finding late events and rewriting their reports (part of `seconds`).
        public var correctionSeconds = 0.0
        /// Time the writer thread spent creating files (overlapping the rest).
        public var writeSeconds = 0.0
        /// Files of windows older than the retention removed after the run.
        public var expiredFiles = 0
        public var seconds = 0.0
        public var description: String {
            "window=\(window) users=\(users) files=\(files) tasks=\(tasks) corrections=\(corrections) late_events=\(lateEvents) beyond_horizon=\(beyondHorizon) correction_seconds=\(String(format: "%.3f", correctionSeconds)) write_seconds=\(String(format: "%.3f", writeSeconds)) expired_files=\(expiredFiles) seconds=\(String(format: "%.3f", seconds))"
        }
    }

    public let configuration: ReporterConfiguration
    public let logger: Logger
    /// Called after each file is renamed into place: a test's way to make a run die between files.
    var afterEachFile: ((Int) throws -> Void)?
    /// Called after each user with the counts so far (the executable draws them on a terminal).
    public var progress: ((Summary) -> Void)?

    public init(configuration: ReporterConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run(now: Timestamp = .now()) throws -> Outcome {
        let started = DispatchTime.now()
        func elapsed() -> Double { Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9 }
        let directory = try ReportDirectory(path: configuration.outputDirectory)
        let store = try ReportStore(conninfo: configuration.conninfo)
        guard try store.tryLock() else { return .locked }
        directory.removeLeftovers()

        let previous: ReportStore.PreviousRun?
        let window: ReportWindow
        if let asked = configuration.window {
            previous = nil
            window = asked
        } else {
            previous = try store.previousRun()
            let schedule = CronSchedule(intervalSeconds: configuration.intervalSeconds, delaySeconds: configuration.delaySeconds)
            guard let next = schedule.window(after: previous?.window.end, now: now) else {
                return .nothingToDo(lastEnd: previous?.window.end ?? now, watermark: schedule.boundary(atOrBefore: now.adding(seconds: -configuration.delaySeconds)))
            }
            window = next
        }
        let cron = configuration.window == nil
        logger.info("reporting", metadata: ["window": "\(window)", "mode": "\(cron ? "cron" : "on demand")", "directory": "\(directory.path)"])

        var summary = Summary(window: window)
        var manifest = RunManifest(window: window)
        // Files are created by the writer's thread while this one reads,
        // judges and renders the next users' reports.
        let writer = ReportWriter(directory: directory, afterEachFile: afterEachFile)
        let snapshot: String
        do {
            snapshot = try store.readConsistently { snapshot in
                try streamReports(window: window, previous: previous, cron: cron, now: now, store: store,
                                  directory: directory, writer: writer, summary: &summary, manifest: &manifest, elapsed: elapsed)
                return snapshot
            }
        } catch {
            _ = try? writer.finish()
            throw error
        }
        let writing = try writer.finish()
        summary.correctionSeconds += writing.corrections
        summary.writeSeconds = writing.writing
        try directory.sync()
        if cron {
            if !manifest.correctedReports.isEmpty {
                try rewriteManifests(of: manifest.correctedReports, by: window, in: directory)
                try directory.sync()
            }
            manifest.counts = RunManifest.Counts(users: summary.users, files: summary.files, tasks: summary.tasks, lateEvents: summary.lateEvents,
                                                 beyondHorizon: summary.beyondHorizon, corrections: summary.corrections)
            try directory.write(name: RunManifest.fileName(for: window), bytes: manifest.render())
            try directory.sync()
            try store.recordRun(window, snapshot: snapshot, summary: summary)
            summary.expiredFiles = removeExpired(from: directory, now: now)
        }
        summary.seconds = elapsed()
        return .done(summary)
    }

    /// Reads the window's tasks (and, in cron mode, those of users with late
    /// events) user by user inside the run's snapshot, and hands each user's
    /// report, and the corrections of earlier windows, to `writer`.
    private func streamReports(window: ReportWindow, previous: ReportStore.PreviousRun?, cron: Bool, now: Timestamp,
                               store: ReportStore, directory: ReportDirectory, writer: ReportWriter, summary: inout Summary, manifest: inout RunManifest,
                               elapsed: () -> Double) throws {
        /// Hands a report to the writers and counts it (the counts and the
        /// manifest only outlive a run whose every file was written). Every
        /// file carries its revision: 1 for a cron run's own window (a file
        /// left by a run that died unrecorded was never published), else the
        /// revision of the file it replaces + 1 (a correction, an on-demand run).
        func write(_ report: UserReport, correction: Bool) throws {
            var report = report
            let name = ReportFileName.make(userId: report.userId, window: report.window)
            let replaces = cron && !correction ? nil : directory.read(name: name).flatMap(UserReport.revision(ofRendered:))
            report.stamp = UserReport.Stamp(revision: (replaces ?? 0) + 1, run: cron ? window : nil)
            try writer.submit(ReportWriter.File(name: name, bytes: report.render(), correction: correction))
            if correction {
                summary.corrections += 1
                manifest.addCorrection(name, report: report, revision: report.stamp!.revision)
            } else {
                summary.files += 1
                summary.tasks += report.taskCount
                manifest.addFile(name, report: report, revision: 1)
            }
        }
        var plan: CorrectionPlan?
        if cron, let previous {
            let started = elapsed()
            plan = try planCorrections(since: previous, now: now, store: store)
            summary.lateEvents = plan?.lateEvents ?? 0
            summary.beyondHorizon = plan?.beyondHorizon ?? 0
            summary.correctionSeconds += elapsed() - started
        }
        let correctingUsers = plan?.users ?? []
        let correcting = Set(correctingUsers)
        var corrected: Set<String> = []
        var current: UserReport?
        var history: [StoredTask] = []
        var counted: String? // the last user counted (one with a task that may be in the window)
        func correct(_ user: String, tasks: [StoredTask]) throws {
            guard let plan else { return }
            let started = elapsed()
            corrected.insert(user)
            for report in plan.corrections(user: user, tasks: tasks) { try write(report, correction: true) }
            summary.correctionSeconds += elapsed() - started
        }
        func finishUser() throws {
            if let done = current, !done.isEmpty { try write(done, correction: false) }
            guard let user = current?.userId, correcting.contains(user) else { return }
            try correct(user, tasks: history)
            history.removeAll(keepingCapacity: true)
        }
        let corrections = correcting.isEmpty ? nil : (users: correctingUsers, previous: previous!.snapshot!)
        try store.streamTasks(window, user: configuration.user, corrections: corrections) { userId, task in
            if current?.userId != userId {
                try finishUser()
                current = UserReport(userId: userId, window: window)
                if let progress { summary.seconds = elapsed(); progress(summary) }
            }
            if correcting.contains(userId) {
                history.append(task)
                guard task.isCandidate(for: window) else { return }
            }
            if counted != userId {
                counted = userId
                summary.users += 1
            }
            current!.add(task.asOf(window.end))
        }
        try finishUser()
        // A former owner who owns no task now still has files to empty.
        for user in correctingUsers where !corrected.contains(user) { try correct(user, tasks: []) }
    }

    /// After corrected files are on disk: rewrites the manifest of each window
    /// they belong to with their new revisions, so that manifest alone names
    /// the window's current files. A manifest that is missing (pruned, or from
    /// before manifests) or unreadable is left as it is, with a warning: the
    /// files are right, and this run's manifest names them. A manifest that
    /// cannot be written fails the run, which the next one redoes.
    private func rewriteManifests(of corrections: [RunManifest.Entry], by run: ReportWindow, in directory: ReportDirectory) throws {
        var byWindow: [ReportWindow: [RunManifest.Entry]] = [:]
        for entry in corrections { if let window = entry.window { byWindow[window, default: []].append(entry) } }
        for (window, entries) in byWindow.sorted(by: { $0.key.end < $1.key.end }) {
            let name = RunManifest.fileName(for: window)
            guard let bytes = directory.read(name: name) else {
                logger.warning("the manifest of a corrected window is missing: not rewritten", metadata: ["manifest": "\(name)", "files": "\(entries.count)"])
                continue
            }
            var manifest: RunManifest
            do {
                manifest = try RunManifest(parsing: bytes, file: name)
            } catch {
                logger.warning("the manifest of a corrected window is unreadable: not rewritten", metadata: ["error": "\(error)"])
                continue
            }
            manifest.correct(entries, by: run)
            try directory.write(name: name, bytes: manifest.render())
        }
    }

    /// Retention: after a recorded cron run, removes this program's files whose
    /// window ended more than `retentionDays` ago. A file that cannot be
    /// removed is a warning, not a failed run (the reports are written).
    /// On-demand runs never prune: their files were asked for.
    private func removeExpired(from directory: ReportDirectory, now: Timestamp) -> Int {
        guard configuration.retentionDays > 0 else { return 0 }
        let cutoff = now.adding(seconds: -configuration.retentionDays * 86_400)
        let pruning = directory.removeExpired(endingBefore: cutoff)
        if let error = pruning.firstError {
            logger.warning("expired report files could not be removed", metadata: [
                "files": "\(pruning.failed)", "first_error": "\(error)", "retention_days": "\(configuration.retentionDays)",
            ])
        }
        return pruning.removed
    }

    /// Finds the events committed since `previous` read the database that
    /// fall in windows already reported, and decides which files of the
    /// recorded windows they change (see `CorrectionPlan`). Runs inside the
    /// run's snapshot; no plan when corrections are off or the previous run
    /// recorded no snapshot.
    private func planCorrections(since previous: ReportStore.PreviousRun, now: Timestamp, store: ReportStore) throws -> CorrectionPlan? {
        guard configuration.correctionHours > 0 else { return nil }
        guard let seen = previous.snapshot else {
            logger.notice("the previous run recorded no snapshot (an older reporter): corrections start with this run")
            return nil
        }
        let started = DispatchTime.now()
        var plan = CorrectionPlan(horizonStart: now.adding(seconds: -configuration.correctionHours * 3600))
        try store.lateTasks(notVisibleIn: seen, through: previous.window.end) { plan.add($0) }
        if plan.beyondHorizon > 0, let earliest = plan.earliestBeyondHorizon {
            logger.warning("late events older than the correction horizon are not corrected", metadata: [
                "events": "\(plan.beyondHorizon)", "earliest": "\(earliest.canonical)",
                "horizon_hours": "\(configuration.correctionHours)",
                "remedy": "reporter --from … --to … rewrites any window on demand",
            ])
        }
        guard let earliest = plan.earliest else { return plan }
        let windows = try store.reportedWindows(endingAtOrAfter: earliest)
        plan.decide(windows: windows)
        if plan.lateEvents > 0 {
            logger.info("late events found", metadata: [
                "events": "\(plan.lateEvents)", "tasks": "\(plan.lateTasks.count)", "users": "\(plan.rewrites.count)", "windows": "\(windows.count)",
                "files": "\(plan.rewrites.values.reduce(0) { $0 + $1.count })",
                "seconds": "\(String(format: "%.3f", Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9))",
            ])
        }
        return plan
    }
}

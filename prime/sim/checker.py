"""The invariant checker: what every simulation run must satisfy (docs/protocol.md section 8).

* Agreement (S1): no two correct replicas deliver different event lists at one
  ordinal.
* Gap-free order (S2): each correct replica delivers 1, 2, 3, ... with no gap
  and no repeat; the only exception is a jump to ``J`` announced by a
  state-transfer notice, after which delivery resumes at ``J+1``.
* Validity (S3): a delivered client update is one a client submitted (same
  content). S4: no replica executes one PO-Request ``(originator, incarnation,
  seq)`` twice.
* The application model: like any replicated application, it applies each
  client stamp once (its client table), and the table is part of the state it
  takes from a peer after a jump, at the ordinal of its CLIENT_STATE_TRANSFER
  marker. A Byzantine replica re-introducing clients' updates makes the core
  deliver duplicates (as the original does); the model counts them, and every
  correct application still applies each update exactly once.
* Liveness (L1): after faults stop, every update a correct client submitted is
  delivered (or covered by a state transfer) at every correct replica within
  the stated bound of virtual time. Clients attach to restarting replicas too:
  what a client hands a recovering incarnation is covered like anything else;
  only what the home daemon held when it restarted, or what reached it while it
  was down, is exempt (``lost_with_home``: a crash may lose it, and the client
  submits that many updates anew).
* Execution, not transfer (L2): a correct replica that was never crashed,
  restarted or cut off by a partition executes every ordinal: it never jumps
  over ordinals by state transfer. Covering updates by a jump is how a replica
  that missed them recovers, not how one that was there all along keeps up (a
  replica blocked on requests it can never certify advanced only by jumps, and
  its clients were never answered, while L1 counted the jumps as coverage).
* Bounded amplification (R1): a correct replica answers one peer's catch-up
  requests with at most ``catchup_answer_bytes_per_s_max`` bytes in any second
  of virtual time (a request of a few dozen bytes was answered with 32 signed
  certificates, as often as every 20 ms).
* Bounded delay (L3, Prime's promise): every update of a client of a correct
  replica gets its reply (the delivery at that replica) within ``reply_bound``
  of its submission, while faults are active too, as long as they are within
  the model; only the time its home replica is cut off by a partition is exempt.

Violations are collected as short strings, never raised, so a run reports all
of them and the simulator can print the replay command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prime.msgs import Update, UpdateKind

ClientStamp = tuple[int, int, int]  # (client, incarnation, seq)


@dataclass(slots=True)
class ReplicaRecord:
    next_ordinal: int = 1
    delivered_stamps: set[ClientStamp] = field(default_factory=set)  # the app's client table
    executed_requests: set[tuple[int, int, int]] = field(default_factory=set)
    jumped_to: list[int] = field(default_factory=list)
    jumped_at_us: list[int] = field(default_factory=list)  # when, in virtual time
    transfer_pending: bool = False
    updates_delivered: int = 0
    duplicates_suppressed: int = 0


@dataclass(slots=True)
class Checker:
    n: int
    correct: set[int]
    violations: list[str] = field(default_factory=list)
    submitted: dict[ClientStamp, bytes] = field(default_factory=dict)
    decided: dict[int, tuple[Update, ...]] = field(default_factory=dict)
    decided_by: dict[int, int] = field(default_factory=dict)
    stamp_ordinal: dict[ClientStamp, int] = field(default_factory=dict)
    replicas: dict[int, ReplicaRecord] = field(default_factory=dict)
    # (sender, peer, virtual second) -> bytes of catch-up answers (R1)
    catchup_answers: dict[tuple[int, int, int], int] = field(default_factory=dict)
    submitted_at: dict[ClientStamp, int] = field(default_factory=dict)  # virtual us
    replied_at: dict[ClientStamp, int] = field(default_factory=dict)  # first reply, virtual us
    # Updates the home daemon took in and then lost in a restart (or that reached it
    # while it was down): a crash may lose them, so L1 and L3 exempt them. Everything
    # a client hands to a running incarnation, recovering or not, stays covered.
    lost_with_home: set[ClientStamp] = field(default_factory=set)
    violations_max: int = 50

    def _violate(self, text: str) -> None:
        if len(self.violations) < self.violations_max:
            self.violations.append(text)

    def record_submit(
        self, client: int, incarnation: int, seq: int, payload: bytes, at_us: int | None = None
    ) -> None:
        self.submitted[(client, incarnation, seq)] = payload
        if at_us is not None:
            self.submitted_at[(client, incarnation, seq)] = at_us

    def record_reply(self, stamp: ClientStamp, at_us: int) -> None:
        """The client's home replica delivered its update: the client has its reply."""
        self.replied_at.setdefault(stamp, at_us)

    def record_lost_with_home(self, stamp: ClientStamp) -> None:
        """The client's home daemon went down holding ``stamp`` (see ``lost_with_home``)."""
        self.lost_with_home.add(stamp)

    def record_restart(self, replica: int) -> None:
        """A restarted replica starts over with empty state (issue: restart)."""
        self.replicas[replica] = ReplicaRecord()

    def record_jump(self, replica: int, ordinal: int, now_us: int) -> None:
        rec = self.replicas.setdefault(replica, ReplicaRecord())
        if ordinal < rec.next_ordinal:
            self._violate(f"S2 r{replica} jumped backwards to {ordinal} at {now_us}us")
        rec.jumped_to.append(ordinal)
        rec.jumped_at_us.append(now_us)
        rec.next_ordinal = ordinal + 1
        rec.transfer_pending = True

    def record_delivery(
        self,
        replica: int,
        ordinal: int,
        updates: tuple[Update, ...],
        requests: tuple[tuple[int, int, int], ...],
        now_us: int,
    ) -> None:
        if replica not in self.correct:
            return
        rec = self.replicas.setdefault(replica, ReplicaRecord())
        if ordinal != rec.next_ordinal:
            self._violate(
                f"S2 r{replica} delivered ordinal {ordinal}, expected {rec.next_ordinal} at {now_us}us"
            )
        rec.next_ordinal = ordinal + 1
        first = self.decided.get(ordinal)
        if first is None:
            self.decided[ordinal] = updates
            self.decided_by[ordinal] = replica
        elif first != updates:
            self._violate(
                f"S1 ordinal {ordinal}: r{replica} delivered {len(updates)} events, "
                f"r{self.decided_by[ordinal]} delivered {len(first)} different ones at {now_us}us"
            )
        for req in requests:
            if req in rec.executed_requests:
                self._violate(f"S4 r{replica} executed request {req} twice (ordinal {ordinal})")
            rec.executed_requests.add(req)
        for u in updates:
            if u.kind == UpdateKind.CLIENT_STATE_TRANSFER and u.client == replica and rec.transfer_pending:
                # The application takes a peer's state as of this ordinal (docs/protocol.md section 7.3).
                rec.delivered_stamps = self.applied_through(ordinal)
                rec.transfer_pending = False
                continue
            if u.kind != UpdateKind.APP:
                continue
            stamp = (u.client, u.incarnation, u.seq)
            if u.client > self.n:
                want = self.submitted.get(stamp)
                if want is None:
                    self._violate(f"S3 r{replica} delivered unsubmitted update {stamp}")
                elif want != u.payload:
                    self._violate(f"S3 r{replica} delivered altered update {stamp}")
            self.stamp_ordinal.setdefault(stamp, ordinal)
            if stamp in rec.delivered_stamps:
                rec.duplicates_suppressed += 1
                continue
            rec.delivered_stamps.add(stamp)
            rec.updates_delivered += 1

    def applied_through(self, ordinal: int) -> set[ClientStamp]:
        """The client table of an application that applied every decided ordinal <= ``ordinal``."""
        out: set[ClientStamp] = set()
        for g in range(1, ordinal + 1):
            for u in self.decided.get(g, ()):
                if u.kind == UpdateKind.APP:
                    out.add((u.client, u.incarnation, u.seq))
        return out

    def check_liveness(self, must_deliver: set[int], stamps: list[ClientStamp], bound_s: float) -> None:
        """Every stamp delivered at every replica in ``must_deliver``, or covered by
        a state transfer to an ordinal at or above where it was decided."""
        for r in sorted(must_deliver):
            rec = self.replicas.get(r, ReplicaRecord())
            jump = max(rec.jumped_to, default=0)
            missing = 0
            example: ClientStamp | None = None
            for stamp in stamps:
                if stamp in rec.delivered_stamps:
                    continue
                at = self.stamp_ordinal.get(stamp)
                if at is not None and at <= jump:
                    continue  # covered by the state transfer
                missing += 1
                example = example or stamp
            if missing:
                self._violate(
                    f"L1 r{r} did not deliver {missing} submitted update(s) within "
                    f"{bound_s:g}s after faults stopped (e.g. {example})"
                )

    def record_catchup_answer(self, src: int, dst: int, size: int, now_us: int) -> None:
        """A correct replica sent ``size`` bytes of catch-up answer to ``dst``."""
        key = (src, dst, now_us // 1_000_000)
        self.catchup_answers[key] = self.catchup_answers.get(key, 0) + size

    def check_catchup_answers(self, bytes_per_s_max: int) -> None:
        """R1: no correct replica answered one peer with more than the bound in a second."""
        worst: dict[tuple[int, int], tuple[int, int]] = {}
        for (src, dst, second), size in self.catchup_answers.items():
            if size > bytes_per_s_max and size > worst.get((src, dst), (0, 0))[0]:
                worst[(src, dst)] = (size, second)
        for (src, dst), (size, second) in sorted(worst.items()):
            self._violate(
                f"R1 r{src} answered r{dst}'s catch-up requests with {size} bytes in second "
                f"{second} (bound {bytes_per_s_max})"
            )

    def check_execution(self, unfaulted: set[int]) -> None:
        """L2: no replica in ``unfaulted`` (correct, never crashed, restarted or cut off)
        jumped over ordinals by state transfer."""
        for r in sorted(unfaulted):
            rec = self.replicas.get(r)
            if rec is not None and rec.jumped_to:
                self._violate(
                    f"L2 r{r} advanced by state transfer {len(rec.jumped_to)} time(s) (to "
                    f"{rec.jumped_to[:5]}), though never crashed, restarted or partitioned"
                )

    def reply_delays(
        self, homes: dict[ClientStamp, int], end_us: int, exempt: dict[int, list[tuple[int, int]]]
    ) -> dict[ClientStamp, int]:
        """Per stamp (client of a correct home), how long its client waited for the reply
        (until ``end_us`` if none came), or nothing when that wait overlaps a window of
        ``exempt`` in which its home replica was cut off by a partition."""
        out: dict[ClientStamp, int] = {}
        for stamp, home in homes.items():
            start = self.submitted_at.get(stamp)
            if start is None:
                continue
            stop = self.replied_at.get(stamp, end_us)
            if any(a < stop and start < b for a, b in exempt.get(home, ())):
                continue
            out[stamp] = stop - start
        return out

    def check_reply_delay(
        self,
        homes: dict[ClientStamp, int],
        bound_us: int,
        end_us: int,
        exempt: dict[int, list[tuple[int, int]]],
    ) -> None:
        """L3: every client of a correct replica got its reply within ``bound_us``; one
        whose update was decided but never delivered at its home (the home jumped over
        it) never gets one, however soon the run ends."""
        late: dict[int, list[tuple[int, ClientStamp]]] = {}
        for stamp, waited in self.reply_delays(homes, end_us, exempt).items():
            skipped = stamp not in self.replied_at and stamp in self.stamp_ordinal
            if waited > bound_us or skipped:
                late.setdefault(homes[stamp], []).append((waited, stamp))
        for home, items in sorted(late.items()):
            waited, stamp = max(items)
            replied = "replied" if stamp in self.replied_at else "never answered"
            self._violate(
                f"L3 {len(items)} update(s) of r{home}'s clients waited more than "
                f"{bound_us / 1e6:g}s for a reply, or got none though decided (worst {stamp}: "
                f"{waited / 1e6:.3f}s, {replied}, "
                f"submitted at {self.submitted_at[stamp]}us)"
            )

    def agreement_prefix(self) -> int:
        return max(self.decided, default=0)

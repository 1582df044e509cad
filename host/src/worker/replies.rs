//! The host's reader of one worker's replies. It hands each finished task's outcome straight
//! to whoever waits for it (through [`Answers`], filled by the dispatcher as it sends tasks),
//! and tells the dispatcher only what it needs for its bookkeeping ([`Heard`]) — so a
//! result reaches its waiter without a hop through the dispatcher thread.

use std::collections::VecDeque;
use std::io::{BufReader, Read};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::dispatch::{Event, Tally};
use crate::pool::task::Completion;
use crate::protocol::{self, Reply, TaskId};
use crate::worker::WorkerRef;

/// The tasks sent to one worker process and not answered yet, in the order sent (the order
/// a worker answers them in: looking one up is a look at the front).
#[derive(Clone, Default)]
pub(crate) struct Answers(Arc<Mutex<Waiting>>);

/// Each task's wire id, where its outcome goes, and how many calls it makes.
type Waiting = VecDeque<(TaskId, Arc<Completion>, u64)>;

impl Answers {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers tasks, `(wire id, completion, calls)` each, before their requests are
    /// written, so their replies find their waiters (one lock for a whole frame's calls).
    pub(crate) fn expect(&self, tasks: impl Iterator<Item = (TaskId, Arc<Completion>, u64)>) {
        self.lock().extend(tasks);
    }

    fn take(&self, task: TaskId) -> Option<(Arc<Completion>, u64)> {
        let mut waiting = self.lock();
        let pos = waiting.iter().position(|(t, _, _)| *t == task)?;
        waiting.remove(pos).map(|(_, c, calls)| (c, calls))
    }

    /// The waiters of tasks `first`, `first + 1`, … (`count` of them: a `Reply::Calls`),
    /// each taken out, in order; `None` for one not waited for (answered before, or an id a
    /// worker made up). One look at the front each when they are where they should be.
    fn take_run(&self, first: TaskId, count: usize) -> Vec<Option<(Arc<Completion>, u64)>> {
        let mut waiting = self.lock();
        (0..count as TaskId)
            .map(|i| {
                let task = first.checked_add(i)?;
                let pos = match waiting.front() {
                    Some((t, _, _)) if *t == task => 0,
                    _ => waiting.iter().position(|(t, _, _)| *t == task)?,
                };
                waiting.remove(pos).map(|(_, c, calls)| (c, calls))
            })
            .collect()
    }

    fn get(&self, task: TaskId) -> Option<Arc<Completion>> {
        let waiting = self.lock();
        waiting
            .iter()
            .find(|(t, _, _)| *t == task)
            .map(|(_, c, _)| c.clone())
    }
}

/// A reply, as the dispatcher sees it once the outcome went to its waiter.
pub(crate) enum Heard {
    /// The worker has started.
    Ready,
    /// A task finished (its outcome is delivered already): how long it ran, the worker's
    /// resident memory, and how its calls ended (nothing if an earlier outcome stood).
    Done {
        task: TaskId,
        took: Duration,
        rss: u64,
        tally: Tally,
    },
    /// Calls of a `Calls` frame finished (their outcomes are delivered already): the first's
    /// wire id, how many, their time together, the worker's resident memory, how they ended.
    Calls {
        first: TaskId,
        count: usize,
        took: Duration,
        rss: u64,
        tally: Tally,
    },
    /// The worker asks to be replaced once its tasks are done.
    Retire,
}

/// Reads `stdout` until it ends: outcomes and streamed output to their tasks, [`Heard`]
/// batches (one event, one wake-up of the dispatcher, per burst of replies) and finally
/// [`Event::Exited`] to `events`, saying why when a frame did not decode (the worker is then
/// killed: it is broken or subverted, and nothing it sends later can be trusted to frame).
pub(crate) fn read_replies(
    stdout: impl Read,
    who: WorkerRef,
    answers: &Answers,
    events: &Sender<Event>,
) {
    let mut r = BufReader::with_capacity(64 << 10, stdout);
    let mut buf = Vec::new();
    loop {
        let mut batch = Vec::new();
        let ended = loop {
            match protocol::read::<_, Reply>(&mut r, &mut buf) {
                Ok(Some(reply)) => batch.push(deliver(reply, answers)),
                Ok(None) => break Some(None),
                // A frame cut short by the end of the stream: the worker died writing it.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Some(None),
                Err(e) => break Some(Some(e.to_string())),
            }
            if !protocol::frame_buffered(r.buffer()) {
                break None;
            }
        };
        let batch: Vec<Heard> = batch.into_iter().flatten().collect();
        if !batch.is_empty() && events.send(Event::Replies(who, batch)).is_err() {
            return;
        }
        if let Some(malformed) = ended {
            let _ = events.send(Event::Exited(who, malformed));
            return;
        }
    }
}

/// Delivers what a reply carries for its task; returns what the dispatcher must hear.
pub(crate) fn deliver(reply: Reply, answers: &Answers) -> Option<Heard> {
    match reply {
        Reply::Ready { .. } => Some(Heard::Ready),
        Reply::Output { task, chunk } => {
            if let Some(c) = answers.get(task) {
                c.stream(chunk);
            }
            None
        }
        Reply::Done {
            task,
            outcome,
            stats,
        } => {
            let (took, rss) = (stats.duration, stats.worker_rss);
            let mut tally = Tally::default();
            // The first outcome stands: a task the dispatcher gave up on stays failed.
            if let Some((c, calls)) = answers.take(task) {
                // What a worker says about files is checked before anyone sees it.
                let outcome = crate::command::check_reply(outcome);
                let counted = Tally::of(&outcome, calls);
                if c.complete(outcome, stats) {
                    tally = counted;
                }
            }
            Some(Heard::Done {
                task,
                took,
                rss,
                tally,
            })
        }
        Reply::Calls { first, calls } => {
            let count = calls.len();
            let (mut took, mut rss) = (Duration::ZERO, 0);
            let mut tally = Tally::default();
            // Every call of the frame is settled before anyone is woken (see
            // `Completion::settle`).
            let mut settled = Vec::with_capacity(count);
            for ((outcome, stats), waiter) in calls.into_iter().zip(answers.take_run(first, count))
            {
                took = took.saturating_add(stats.duration);
                rss = stats.worker_rss;
                let Some((c, calls)) = waiter else { continue };
                let outcome = crate::command::check_reply(outcome);
                let counted = Tally::of(&outcome, calls);
                if let Some(wake) = c.settle(outcome, stats) {
                    tally.merge(counted);
                    settled.push((c, wake));
                }
            }
            for (c, wake) in settled {
                c.wake(wake);
            }
            Some(Heard::Calls {
                first,
                count,
                took,
                rss,
                tally,
            })
        }
        Reply::Retire => Some(Heard::Retire),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandOutput, OutputFile};
    use std::future::Future;

    use crate::pool::task::Task;
    use crate::protocol::TaskStats;
    use crate::value::Output;

    /// Feeds one framed `Done` reply carrying a command output with files named `names` to
    /// the reply reader, and returns what the task's caller sees.
    fn caller_sees(names: &[&str]) -> Result<CommandOutput, crate::TaskError> {
        let out = CommandOutput {
            files: names
                .iter()
                .map(|n| OutputFile {
                    path: n.to_string(),
                    data: b"x".to_vec(),
                })
                .collect(),
            ..CommandOutput::default()
        };
        let mut wire = Vec::new();
        let reply = Reply::Done {
            task: 1,
            outcome: Ok(Output::Command(out)),
            stats: TaskStats::default(),
        };
        protocol::encode(&reply, &mut wire).unwrap();
        let answers = Answers::default();
        let completion = Completion::new(None);
        answers.expect(std::iter::once((1, completion.clone(), 1)));
        let (tx, _rx) = crossbeam_channel::unbounded();
        let who = WorkerRef {
            slot: 0,
            generation: 0,
        };
        read_replies(&wire[..], who, &answers, &tx);
        Task::<CommandOutput>::new(1, completion, tx).wait()
    }

    /// A waker that notes, when woken, whether `later` is done.
    struct Notes {
        later: Arc<Completion>,
        later_done: std::sync::atomic::AtomicBool,
    }

    impl std::task::Wake for Notes {
        fn wake(self: Arc<Self>) {
            let done = self.later.is_done();
            self.later_done
                .store(done, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_calls_reply_wakes_waiters_once_every_call_of_it_is_done() {
        // An in-order waiter woken for the first call of a frame must find the frame's
        // later calls done, or it sleeps again on each of them (a wake-up per call).
        let answers = Answers::default();
        let completions: Vec<_> = (0..3).map(|_| Completion::new(None)).collect();
        answers.expect(
            completions
                .iter()
                .enumerate()
                .map(|(i, c)| (10 + i as TaskId, c.clone(), 1)),
        );
        let (tx, _rx) = crossbeam_channel::unbounded();
        let mut first = Task::<i64>::new(1, completions[0].clone(), tx.clone());
        let notes = Arc::new(Notes {
            later: completions[2].clone(),
            later_done: false.into(),
        });
        let waker = std::task::Waker::from(notes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::pin::Pin::new(&mut first).poll(&mut cx).is_pending());
        let ok = |n| {
            (
                Ok(Output::Numbers(vec![crate::value::Value::I64(n)])),
                TaskStats::default(),
            )
        };
        let mut wire = Vec::new();
        let reply = Reply::Calls {
            first: 10,
            calls: vec![ok(1), ok(2), ok(3)],
        };
        protocol::encode(&reply, &mut wire).unwrap();
        let who = WorkerRef {
            slot: 0,
            generation: 0,
        };
        read_replies(&wire[..], who, &answers, &tx);
        assert!(notes.later_done.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(first.wait(), Ok(1));
        let last = Task::<i64>::new(3, completions[2].clone(), tx);
        assert_eq!(last.wait(), Ok(3));
    }

    #[test]
    fn forged_output_paths_are_refused_whole() {
        let ok = caller_sees(&["a.txt", "sub/b.txt", "sub-c"]).unwrap();
        assert_eq!(ok.files.len(), 3);
        let long_name = "n".repeat(256);
        let long_path = ["d"; 2100].join("/");
        for forged in [
            &["ok.txt", "../../x"][..],
            &["/abs/path"],
            &["a/../b"],
            &["./a"],
            &["a//b"],
            &["a/"],
            &[""],
            &["a\0b"],
            &[long_name.as_str()],
            &[long_path.as_str()],
            &["x", "x"],
            &["a", "a/b"],
        ] {
            let err = caller_sees(forged).unwrap_err();
            assert_eq!(err.kind(), "bad_output", "{forged:?}: {err}");
            assert!(err.to_string().contains("refuses"), "{err}");
        }
    }
}

//! Writing to the Northbound database. Reconcilers hand their work to one writer as closures
//! over the cache; the writer runs every closure that is waiting against one snapshot of the
//! cache and commits them as one transaction (so 50,000 pods do not cost 50,000 round trips),
//! then waits until the cache shows the result, so the next closure never acts on a state
//! that is already gone. A batch that fails is retried closure by closure: one bad request
//! fails alone.

use std::sync::Arc;

use ovsdb::{Cache, Client, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::topology::NB;

/// A reconciler's part of a transaction: appends operations, or says why it cannot.
pub type NbOp = Box<dyn Fn(&Cache, &mut Transaction) -> Result<(), String> + Send + Sync>;

type Job = (Arc<NbOp>, oneshot::Sender<Result<()>>);

/// The most closures folded into one transaction.
const MAX_BATCH: usize = 512;

#[derive(Clone)]
pub struct NbWriter {
    client: Client,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Counts what the writer did (for metrics and the benchmark).
pub trait NbObserver: Send + Sync {
    fn batch(&self, _jobs: usize) {}
}

impl NbWriter {
    pub fn start(client: Client, observer: Arc<dyn NbObserver>) -> NbWriter {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(client.clone(), rx, observer));
        NbWriter { client, jobs }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `op` in the next batch; returns once it is committed and visible in the cache.
    pub async fn apply(
        &self,
        op: impl Fn(&Cache, &mut Transaction) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((Arc::new(Box::new(op)), tx))
            .map_err(|_| Error::Nb("NB writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Nb("NB writer stopped".into()))?
    }
}

async fn write_loop(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Job>,
    observer: Arc<dyn NbObserver>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        observer.batch(batch.len());
        run_batch(&client, batch).await;
    }
}

/// Folds every job into one transaction; on failure, runs them one by one.
async fn run_batch(client: &Client, batch: Vec<Job>) {
    let mut t = Transaction::new(NB);
    let mut ready = Vec::new();
    client.read(|cache| {
        for (op, reply) in batch {
            let mark = t.len();
            match op(cache, &mut t) {
                Ok(()) => ready.push((op, reply)),
                Err(e) => {
                    t.truncate(mark);
                    let _ = reply.send(Err(Error::Nb(e)));
                }
            }
        }
    });
    if t.is_empty() {
        for (_, reply) in ready {
            let _ = reply.send(Ok(()));
        }
        return;
    }
    match client.transact_synced(&t).await {
        Ok(_) => {
            for (_, reply) in ready {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) if ready.len() == 1 => {
            for (_, reply) in ready {
                let _ = reply.send(Err(Error::Nb(e.to_string())));
            }
        }
        Err(_) => {
            for (op, reply) in ready {
                let mut t = Transaction::new(NB);
                let built = client.read(|cache| op(cache, &mut t));
                let result = match built {
                    Err(e) => Err(Error::Nb(e)),
                    Ok(()) if t.is_empty() => Ok(()),
                    Ok(()) => client
                        .transact_synced(&t)
                        .await
                        .map(drop)
                        .map_err(|e| Error::Nb(e.to_string())),
                };
                let _ = reply.send(result);
            }
        }
    }
}

//! [`FaultyFs`]: an in-memory [`FileSystem`] that models what a power loss keeps, for crash tests.
//!
//! Each file has the bytes a running process sees and the bytes the "disk" holds durably. `sync_data` makes a
//! file's bytes durable; `sync_dir` makes the creations, renames and removals of names in a directory
//! durable. A simulated crash ([`FaultyFs::crash`]) then keeps, for each file, its durable bytes plus any
//! prefix of the bytes written after them (a torn write), and in each directory any prefix, in order, of the
//! name changes not yet made durable. Every choice is drawn from the seed, so a failure replays exactly.
//! Directories themselves are durable as soon as they are created.
//!
//! Injected I/O errors ([`FaultyFs::fail_call`]) make the n-th next call of one kind fail once, with EIO or
//! ENOSPC. They follow Linux rather than POSIX's promise: a failed write may have appended a prefix of its
//! buffer; a failed `sync_data` leaves the file's unsynced bytes visible but not durable, and marks them as
//! written back (the kernel drops the dirty state of pages whose writeback failed), so a later `sync_data`
//! of the same file succeeds without writing them: the disk then holds zeros in their place, a hole under
//! data that did reach it ("fsyncgate"). A storage that retries a failed fsync and goes on loses what it
//! acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, WritableFile, parent_dir};
use crate::rng::SplitMix64;

/// An in-memory file system with simulated crashes, torn writes, lost renames and bit flips.
///
/// Clones share the same files, so a test keeps one clone to crash and inspect the file system that the
/// storage under test writes through.
#[derive(Clone, Debug)]
pub struct FaultyFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    /// Bumped at each crash: handles opened before it are dead.
    epoch: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    dirs: BTreeSet<PathBuf>,
    /// The names a running process sees.
    names: BTreeMap<PathBuf, u64>,
    /// The names a crash would keep if no pending change reached the disk.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Name changes not yet made durable by `sync_dir`, oldest first.
    pending: Vec<NameOp>,
    mutations: u64,
    crash_after: Option<u64>,
    down: bool,
    ignore_sync: bool,
    data_syncs: u64,
    dir_syncs: u64,
    /// Errors waiting to be injected, at most one per kind of call.
    injected: Vec<Injected>,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges whose writeback failed: visible in `data`, never written to `durable` by a later sync.
    lost: Vec<std::ops::Range<usize>>,
}

impl Inode {
    /// A successful `sync_data`: everything reaches the disk but the bytes whose writeback failed before,
    /// which the disk holds as zeros.
    fn sync(&mut self) {
        self.durable.clone_from(&self.data);
        for range in &self.lost {
            let end = range.end.min(self.durable.len());
            if let Some(hole) = self.durable.get_mut(range.start..end) {
                hole.fill(0);
            }
        }
    }
}

/// A kind of file-system call an injected error can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoCall {
    /// [`WritableFile::write_all`].
    Write,
    /// [`WritableFile::sync_data`].
    SyncData,
    /// [`FileSystem::sync_dir`].
    SyncDir,
    /// [`FileSystem::rename`].
    Rename,
    /// [`FileSystem::create`].
    Create,
}

/// The error an injected fault reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoFault {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the device is full ([`io::ErrorKind::StorageFull`]).
    NoSpace,
}

impl IoFault {
    /// The `io::Error` a real file system returns for it.
    pub fn to_io_error(self) -> io::Error {
        match self {
            IoFault::Eio => io::Error::from_raw_os_error(5),
            IoFault::NoSpace => io::Error::from_raw_os_error(28),
        }
    }
}

/// An error armed by [`FaultyFs::fail_call`]: the call of kind `call` after `skip` more of them fails.
#[derive(Clone, Copy, Debug)]
struct Injected {
    call: IoCall,
    skip: u64,
    fault: IoFault,
}

#[derive(Clone, Debug)]
enum NameOp {
    Link { path: PathBuf, ino: u64 },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
}

impl NameOp {
    fn dir(&self) -> PathBuf {
        match self {
            NameOp::Link { path, .. } | NameOp::Unlink { path } => parent_dir(path),
            NameOp::Rename { to, .. } => parent_dir(to),
        }
    }

    /// Applies the change to a name table; a change whose source is gone is skipped.
    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            NameOp::Link { path, ino } => {
                names.insert(path.clone(), *ino);
            }
            NameOp::Unlink { path } => {
                names.remove(path);
            }
            NameOp::Rename { from, to } => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
        }
    }
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl State {
    /// Counts one mutating call, failing it (and everything after) once the crash point is passed.
    fn mutate(&mut self) -> io::Result<()> {
        self.check_up()?;
        self.mutations += 1;
        if self.crash_after.is_some_and(|n| self.mutations > n) {
            self.down = true;
            return Err(power_lost());
        }
        Ok(())
    }

    /// Counts one call of kind `call` against the armed errors: the error to report if this one fails.
    fn injected(&mut self, call: IoCall) -> Option<io::Error> {
        let at = self.injected.iter().position(|i| i.call == call)?;
        let armed = &mut self.injected[at];
        if armed.skip > 0 {
            armed.skip -= 1;
            return None;
        }
        Some(self.injected.remove(at).fault.to_io_error())
    }

    fn check_up(&self) -> io::Result<()> {
        if self.down { Err(power_lost()) } else { Ok(()) }
    }

    fn ino(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn inode(&mut self, ino: u64) -> &mut Inode {
        self.inodes
            .get_mut(&ino)
            .expect("a name points at a live inode")
    }

    fn crash(&mut self, keep_bytes: &mut dyn FnMut(&Path, usize) -> usize, keep_name_ops: usize) {
        for op in self.pending.drain(..).take(keep_name_ops) {
            op.apply(&mut self.durable_names);
        }
        let mut kept = HashMap::new();
        for (path, &ino) in &self.durable_names {
            if kept.contains_key(&ino) {
                continue;
            }
            let inode = &self.inodes[&ino];
            let mut bytes = inode.durable.clone();
            if inode.data.starts_with(&inode.durable) {
                let unsynced = &inode.data[inode.durable.len()..];
                let keep = keep_bytes(path, unsynced.len()).min(unsynced.len());
                bytes.extend_from_slice(&unsynced[..keep]);
            }
            kept.insert(ino, bytes);
        }
        self.inodes = kept
            .into_iter()
            .map(|(ino, bytes)| {
                let inode = Inode {
                    data: bytes.clone(),
                    durable: bytes,
                    lost: Vec::new(),
                };
                (ino, inode)
            })
            .collect();
        self.names = self.durable_names.clone();
        self.down = false;
        self.crash_after = None;
        self.injected.clear();
        self.epoch += 1;
    }
}

impl FaultyFs {
    /// An empty file system whose crash choices are drawn from `seed`.
    pub fn new(seed: u64) -> FaultyFs {
        let state = State {
            rng: SplitMix64::new(seed),
            epoch: 0,
            next_ino: 1,
            inodes: HashMap::new(),
            dirs: BTreeSet::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            pending: Vec::new(),
            mutations: 0,
            crash_after: None,
            down: false,
            ignore_sync: false,
            data_syncs: 0,
            dir_syncs: 0,
            injected: Vec::new(),
        };
        FaultyFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this file; the state is still usable for reporting.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loses power after `n` more mutating calls (writes, syncs, creations, renames, removals, truncations)
    /// counted from the start: call `n + 1` and every call after it fail until [`FaultyFs::crash`]. `None`
    /// removes the crash point.
    pub fn crash_after_mutations(&self, n: Option<u64>) {
        self.lock().crash_after = n;
    }

    /// How many mutating calls have been made (including one that failed at the crash point).
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// True once the crash point has been reached and until [`FaultyFs::crash`].
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// Makes the call of kind `call` that comes after `skip` more of them (0: the next one) fail with `fault`,
    /// once; replaces an error armed earlier for the same kind. A crash disarms every armed error. See the
    /// module documentation for what a failed write or `sync_data` leaves behind.
    pub fn fail_call(&self, call: IoCall, skip: u64, fault: IoFault) {
        let mut state = self.lock();
        state.injected.retain(|i| i.call != call);
        state.injected.push(Injected { call, skip, fault });
    }

    /// Disarms every error armed by [`FaultyFs::fail_call`] that has not fired yet.
    pub fn disarm_errors(&self) {
        self.lock().injected.clear();
    }

    /// True while an error armed by [`FaultyFs::fail_call`] has not fired yet.
    pub fn has_armed_error(&self) -> bool {
        !self.lock().injected.is_empty()
    }

    /// Simulates a broken disk that acknowledges `sync_data` and `sync_dir` without making anything durable.
    /// Used to show that the crash tests catch a storage that does not really sync.
    pub fn set_ignore_sync(&self, ignore: bool) {
        self.lock().ignore_sync = ignore;
    }

    /// How many `sync_data` calls have succeeded.
    pub fn data_syncs(&self) -> u64 {
        self.lock().data_syncs
    }

    /// How many `sync_dir` calls have succeeded.
    pub fn dir_syncs(&self) -> u64 {
        self.lock().dir_syncs
    }

    /// Simulates a power loss and a reboot, drawing from the seed what each file and directory keeps of
    /// what was not yet durable. Open handles die; the crash point is cleared.
    pub fn crash(&self) {
        let mut state = self.lock();
        let mut rng = state.rng.clone();
        let pending = state.pending.len() as u64;
        let keep_name_ops = match rng.below(3) {
            0 => 0,
            1 => pending,
            _ => rng.below(pending + 1),
        } as usize;
        let mut keep_bytes = |_: &Path, unsynced: usize| match rng.below(4) {
            0 => 0,
            1 => unsynced,
            _ => rng.below(unsynced as u64 + 1) as usize,
        };
        state.crash(&mut keep_bytes, keep_name_ops);
        state.rng = rng;
    }

    /// Simulates a power loss with explicit choices: `keep_bytes(path, unsynced_len)` says how many of a
    /// file's unsynced bytes survive (a prefix), and the first `keep_name_ops` pending name changes survive.
    pub fn crash_with(
        &self,
        keep_bytes: &mut dyn FnMut(&Path, usize) -> usize,
        keep_name_ops: usize,
    ) {
        self.lock().crash(keep_bytes, keep_name_ops);
    }

    /// XORs the byte at `offset` of a file with `mask`, both in what a process sees and on the "disk".
    pub fn flip_byte(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        let mut state = self.lock();
        let ino = state.ino(path)?;
        let inode = state.inode(ino);
        let at = usize::try_from(offset).map_err(|_| not_found(path))?;
        for bytes in [&mut inode.data, &mut inode.durable] {
            if let Some(b) = bytes.get_mut(at) {
                *b ^= mask;
            }
        }
        if at >= inode.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset past the end of the file",
            ));
        }
        Ok(())
    }

    /// How many bytes of a file are not yet durable, or `None` if it does not exist.
    pub fn unsynced_len(&self, path: &Path) -> Option<usize> {
        let mut state = self.lock();
        let ino = state.ino(path).ok()?;
        let inode = state.inode(ino);
        Some(inode.data.len().saturating_sub(inode.durable.len()))
    }

    /// Every file a process sees, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }
}

/// A [`FaultyFs`] file opened for appending.
#[derive(Debug)]
struct FaultyFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    epoch: u64,
}

impl FaultyFile {
    fn live_state(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.epoch != self.epoch {
            return Err(power_lost());
        }
        Ok(state)
    }
}

impl WritableFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.live_state()?;
        state.mutate()?;
        if let Some(err) = state.injected(IoCall::Write) {
            // A failed write may have appended any prefix of its buffer.
            let written = state.rng.below(buf.len() as u64 + 1) as usize;
            state
                .inode(self.ino)
                .data
                .extend_from_slice(&buf[..written]);
            return Err(err);
        }
        state.inode(self.ino).data.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.live_state()?;
        state.mutate()?;
        if let Some(err) = state.injected(IoCall::SyncData) {
            // The writeback of the unsynced bytes failed: they stay visible, are not durable, and count as
            // written back, so no later sync writes them.
            let inode = state.inode(self.ino);
            let unsynced = inode.durable.len().min(inode.data.len())..inode.data.len();
            if !unsynced.is_empty() {
                inode.lost.push(unsynced);
            }
            return Err(err);
        }
        if !state.ignore_sync {
            state.inode(self.ino).sync();
        }
        state.data_syncs += 1;
        Ok(())
    }
}

impl FileSystem for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check_up()?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        state.check_up()?;
        let ino = state.ino(path)?;
        Ok(state.inode(ino).data.clone())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.lock();
        state.mutate()?;
        if let Some(err) = state.injected(IoCall::Create) {
            return Err(err);
        }
        if !state.dirs.contains(&parent_dir(path)) {
            return Err(not_found(path));
        }
        let ino = state.next_ino;
        state.next_ino += 1;
        state.inodes.insert(ino, Inode::default());
        state.names.insert(path.to_path_buf(), ino);
        state.pending.push(NameOp::Link {
            path: path.to_path_buf(),
            ino,
        });
        Ok(Box::new(FaultyFile {
            state: Arc::clone(&self.state),
            ino,
            epoch: state.epoch,
        }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        let ino = state.ino(path)?;
        let ignore_sync = state.ignore_sync;
        let inode = state.inode(ino);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        inode.data.truncate(len);
        inode.lost.retain(|range| range.start < len);
        if !ignore_sync {
            inode.sync();
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        if parent_dir(from) != parent_dir(to) {
            return Err(io::Error::other("FaultyFs renames only within a directory"));
        }
        if let Some(err) = state.injected(IoCall::Rename) {
            return Err(err);
        }
        let ino = state.ino(from)?;
        state.names.remove(from);
        state.names.insert(to.to_path_buf(), ino);
        state.pending.push(NameOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        state.ino(path)?;
        state.names.remove(path);
        state.pending.push(NameOp::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        if let Some(err) = state.injected(IoCall::SyncDir) {
            // The name changes stay pending: a crash may keep or lose them.
            return Err(err);
        }
        if !state.ignore_sync {
            let (now, later): (Vec<NameOp>, Vec<NameOp>) = std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|op| op.dir() == dir);
            for op in &now {
                op.apply(&mut state.durable_names);
            }
            state.pending = later;
        }
        state.dir_syncs += 1;
        Ok(())
    }
}

// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
/*
 * Rampart kernel sensor. Tracepoints only (this kernel refuses fentry/LSM and has no kprobes).
 *
 * Every record = struct hdr, then a fixed body per kind, then variable sections. A section is a
 * 4-byte-aligned struct sect followed by `len` bytes: a string (no NUL), raw argv bytes, or a path
 * as NUL-terminated components, leaf first (userspace reverses and joins them). events.rs mirrors
 * this layout; keep both in sync.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

/* FMODE_CREATED of include/linux/fs.h (a #define: not in BTF). */
#define RAMPART_FMODE_CREATED (1U << 20)
/* Set in a write-close event's flags when the open created the file. */
#define RAMPART_FILE_CREATED (1U << 31)

char LICENSE[] SEC("license") = "GPL";

enum ev_kind {
	EV_EXEC = 1,
	EV_FORK,
	EV_EXIT,
	EV_WRITE_CLOSE,
	EV_DELETE,
	EV_RENAME,
	EV_CHMOD,
	EV_CONNECT,
	EV_ACCEPT,
	EV_LISTEN,
	EV_MODULE,
	EV_PTRACE,
	EV_SETID,
	EV_KIND_MAX,
};

#define SCRATCH 32768
/* Contents start at an offset <= DATA_MASK and take at most CHUNK bytes, so records end below
 * DATA_MASK + 4 + CHUNK + 3 < SCRATCH; section headers sit at 4-aligned offsets < SCRATCH. The
 * masks applied through bound() therefore never change a value: they give the verifier bounds
 * on the very registers used for the accesses. */
#define DATA_MASK 16383
#define DESC_MASK (SCRATCH - 4)
#define LEN_MASK 8191
#define CHUNK 4096
#define NAME_CHUNK 256
#define PATH_STEPS 40 /* components plus mount crossings */

#define SECT_TRUNC 1
#define SECT_UNROOTED 2 /* walk ended at a dentry that is its own parent (pipe, memfd, ...) */
#define SECT_WALKED 4 /* a path walk (empty when there was nothing to walk) */

#define EXEC_ARGV_TRUNC 1
#define EXEC_DELETED 2
#define EXEC_MEMFD 4
#define EXEC_VERSION 8 /* size, mtime and ctime of the image were read */

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_PATH 010000000
#define WRITE_INTENT (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)
#define S_IFMT 0170000
#define S_IFREG 0100000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10
#define EINTR 4
#define ECONNABORTED 103
#define EALREADY 114
#define EINPROGRESS 115
#define ERESTARTSYS 512 /* kernel-internal: the call is restarted after the signal handler */
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206
#define SIGNAL_GROUP_EXIT 0x00000004

struct hdr {
	u32 kind;
	u32 len;
	u64 time_ns; /* bpf_ktime_get_boot_ns */
	u64 start_ns; /* task->start_boottime */
	u64 parent_start_ns;
	u64 cgroup_id;
	u32 pid;
	u32 tgid;
	u32 ppid;
	u32 uid;
	u32 gid;
	u32 euid;
	u32 egid;
	u32 loginuid;
	u32 sessionid;
	u32 _pad;
	char comm[16];
};
_Static_assert(sizeof(struct hdr) == 96, "hdr layout");

struct sect {
	u16 len;
	u16 flags;
};

struct exec_body {
	u64 inode;
	u64 dev;
	u32 nlink;
	u32 flags;
	/* The image's version as stat gives it: with the inode, the agent knows a binary it
	 * checked and hashed before without a stat of its own. */
	u64 size;
	s64 mtime_sec;
	s64 ctime_sec;
	u32 mtime_nsec;
	u32 ctime_nsec;
};
struct exit_body {
	u32 code;
	u32 _pad;
};
struct write_close_body {
	u64 inode;
	u64 size;
	u64 open_ns;
	u32 flags;
	u32 _pad;
};
struct u32_body {
	u32 value;
	u32 _pad;
};
struct net_body {
	s32 result;
	u16 lfamily;
	u16 rfamily;
	u16 protocol;
	u16 sock_type;
	u16 lport;
	u16 rport;
	u8 laddr[16];
	u8 raddr[16];
};
struct ptrace_body {
	s64 request;
	u32 target;
	u32 _pad;
};
struct setid_body {
	u32 call;
	u32 uid;
	u32 euid;
	u32 suid;
	u32 fsuid;
	u32 gid;
	u32 egid;
	u32 sgid;
	u32 fsgid;
	u32 _pad;
	u64 cap_effective;
	u64 cap_permitted;
};

struct buf {
	u8 data[SCRATCH];
};

/* One record is built per CPU at a time: all hooks using it run in process context with
 * preemption off. inet_sock_set_state also fires in softirq, which can interrupt them: it never
 * uses this buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct buf);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 << 20); /* resized by userspace before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_KIND_MAX);
	__type(key, u32);
	__type(value, u64);
} drops SEC(".maps");

enum pend_op {
	PEND_OPEN = 1,
	PEND_DELETE,
	PEND_RENAME,
	PEND_CHMOD,
	PEND_FCHMOD,
	PEND_CONNECT,
	PEND_LISTEN,
};

/* Syscall arguments remembered from sys_enter until sys_exit, per thread. connect: fd, then the
 * struct sock of a TCP socket (0 for other protocols), then 1 for a call on a socket already
 * connecting (a repeated call, which reports nothing itself). */
struct pending {
	u32 op;
	u32 _pad;
	s64 args[5];
	u8 addr[28]; /* connect: sockaddr_in / sockaddr_in6 */
	u32 _pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct pending);
} pending SEC(".maps");

struct fd_key {
	u32 tgid;
	u32 fd;
};
struct write_fd {
	u64 file; /* identity check: the fd may have been replaced without a close() */
	u64 open_ns;
	u32 flags;
	u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fd_key);
	__type(value, struct write_fd);
} write_fds SEC(".maps");

/* Processes with tracked write fds, so exit only sweeps the fd table of those. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u32);
} write_tgids SEC(".maps");

/* A TCP connect whose outcome is not reported yet, by struct sock address: from sys_enter_connect
 * until the handshake ends (inet_sock_set_state) or, when the call itself ends it, its sys_exit.
 * `rec` is the record to emit, taken at the call (the task header; the local address is read
 * again at the outcome). `has_outcome`: the handshake ended inside the call, whose sys_exit
 * reports. Whoever deletes the entry reports it, so a connect is reported once. */
struct conn_rec {
	struct hdr hdr;
	struct net_body net;
};
struct conn {
	struct conn_rec rec;
	s32 outcome;
	u32 has_outcome;
};

/* 16,384 handshakes in flight at once (3.7 MB of kernel memory; 65,536 took 14.7 MB). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct conn);
} conns SEC(".maps");

const volatile u32 ignore_tgid = 0;

static __always_inline struct buf *get_buf(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline void count_drop(u32 kind)
{
	u64 *n = bpf_map_lookup_elem(&drops, &kind);
	/* Atomic: a softirq (inet_sock_set_state) may count on this CPU in the middle of a task's
	 * count. */
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* An AND clang cannot move or drop (a compare-and-clamp often lands on a register copy). */
static __always_inline u32 bound(u32 v, const u32 mask)
{
	u64 r = v;
	asm volatile("%0 &= %1" : "+r"(r) : "i"(mask));
	return r;
}

/* A section header's offset. */
static __always_inline u32 desc_at(u32 off)
{
	return bound(off + 3, DESC_MASK);
}

static __always_inline void submit(struct buf *b, u32 len)
{
	struct hdr *h = (void *)b->data;
	u32 kind = h->kind;
	len = bound(len, SCRATCH - 1);
	h->len = len;
	if (bpf_ringbuf_output(&events, b->data, len, 0))
		count_drop(kind);
}

static __always_inline void fill_hdr(struct hdr *h, u32 kind, struct task_struct *t, bool is_current)
{
	struct task_struct *parent = BPF_CORE_READ(t, real_parent);
	const struct cred *cred = BPF_CORE_READ(t, cred);

	h->kind = kind;
	h->len = 0;
	h->time_ns = bpf_ktime_get_boot_ns();
	/* Process start times (the group leaders'), as /proc/PID/stat reports them: a thread's own
	 * start time would not identify its process. */
	h->start_ns = BPF_CORE_READ(t, group_leader, start_boottime);
	h->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_boottime);
	h->cgroup_id = is_current ? bpf_get_current_cgroup_id()
				  : BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	h->pid = BPF_CORE_READ(t, pid);
	h->tgid = BPF_CORE_READ(t, tgid);
	h->ppid = BPF_CORE_READ(parent, tgid);
	h->uid = BPF_CORE_READ(cred, uid.val);
	h->gid = BPF_CORE_READ(cred, gid.val);
	h->euid = BPF_CORE_READ(cred, euid.val);
	h->egid = BPF_CORE_READ(cred, egid.val);
	/* Without CONFIG_AUDIT there is no login uid: report "unset" like the kernel does. */
	if (bpf_core_field_exists(t->loginuid)) {
		h->loginuid = BPF_CORE_READ(t, loginuid.val);
		h->sessionid = BPF_CORE_READ(t, sessionid);
	} else {
		h->loginuid = (u32)-1;
		h->sessionid = (u32)-1;
	}
	h->_pad = 0;
	BPF_CORE_READ_STR_INTO(&h->comm, t, comm);
}

/* Starts a record for the current task; NULL when it is ignored or there is no buffer. */
static __always_inline struct buf *begin(u32 kind, struct task_struct **task)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (ignore_tgid && tgid == ignore_tgid)
		return NULL;
	struct buf *b = get_buf();
	if (!b)
		return NULL;
	*task = (struct task_struct *)bpf_get_current_task();
	fill_hdr((void *)b->data, kind, *task, true);
	return b;
}

/* Writes an empty section when the budget is exhausted, so the decoder still finds it. */
static __always_inline u32 put_str(struct buf *b, u32 off, const void *src, bool user)
{
	off = desc_at(off);
	struct sect *s = (void *)&b->data[off];
	if (off > DATA_MASK || !src) {
		s->len = 0;
		s->flags = off > DATA_MASK ? SECT_TRUNC : 0;
		return off + sizeof(*s);
	}
	u32 c = bound(off, DATA_MASK);
	long n = user ? bpf_probe_read_user_str(&b->data[c + 4], CHUNK, src)
		      : bpf_probe_read_kernel_str(&b->data[c + 4], CHUNK, src);
	if (n <= 0) {
		s->len = 0;
		s->flags = 0;
		return off + sizeof(*s);
	}
	s->len = n - 1;
	s->flags = n == CHUNK ? SECT_TRUNC : 0;
	return off + sizeof(*s) + n - 1;
}

struct walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	u32 off;
	u16 flags;
};

/* One step up: a mount crossing, or one component written leaf first. 1 ends the walk. */
static long walk_step(u32 i, struct walk *w)
{
	/* Locals: BPF_CORE_READ on w->field would relocate struct walk itself. */
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct buf *b = get_buf();
	if (!b)
		return 1;
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == mnt_root) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (up == mnt) {
			w->flags = SECT_WALKED;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		w->vfsmnt = &up->mnt;
		return 0;
	}
	if (w->off > DATA_MASK)
		return 1;
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	long n = bpf_probe_read_kernel_str(&b->data[bound(w->off, DATA_MASK)], NAME_CHUNK, name);
	if (n <= 0)
		return 1;
	w->off += n;
	if (parent == dentry) {
		w->flags = SECT_WALKED | SECT_UNROOTED;
		return 1;
	}
	w->dentry = parent;
	return 0;
}

/* The path of (dentry, vfsmount), walking dentries up to the mount namespace root and crossing
 * mount points through struct mount. bpf_loop and a global function keep the verifier's work
 * per caller constant (an open loop here exceeds its instruction budget). */
__noinline int put_path(u32 off, u64 dentry_ptr, u64 vfsmnt_ptr)
{
	struct buf *b = get_buf();
	if (!b)
		return off;
	off = desc_at(off);
	struct sect *s = (void *)&b->data[off];
	struct walk w = {
		.dentry = (void *)dentry_ptr,
		.vfsmnt = (void *)vfsmnt_ptr,
		.mnt = (void *)vfsmnt_ptr - bpf_core_field_offset(struct mount, mnt),
		.off = off + sizeof(*s),
		.flags = SECT_WALKED | SECT_TRUNC,
	};
	if (!w.dentry || !w.vfsmnt)
		w.flags = 0;
	else
		bpf_loop(PATH_STEPS, walk_step, &w, 0);
	s->len = w.off - (off + sizeof(*s));
	s->flags = w.flags;
	return w.off;
}

static __always_inline struct file *fd_file(struct task_struct *t, s64 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	u32 max = BPF_CORE_READ(fdt, max_fds);
	struct file *f = NULL;
	if (fd < 0 || fd >= max || !fds)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline u32 put_file_path(u32 off, struct file *f)
{
	if (!f)
		return put_path(off, 0, 0);
	return put_path(off, (u64)BPF_CORE_READ(f, f_path.dentry), (u64)BPF_CORE_READ(f, f_path.mnt));
}

/* A path argument as two sections: the string as passed, then the directory it is relative to
 * (cwd for AT_FDCWD, else the dirfd's path), left empty when the string is absolute. */
static __always_inline u32 put_at_path(struct buf *b, u32 off, struct task_struct *t, s64 dfd,
				       const char *upath)
{
	char first = 0;
	off = put_str(b, off, upath, true);
	if (upath)
		bpf_probe_read_user(&first, 1, upath);
	if (first == '/')
		return put_path(off, 0, 0);
	if ((int)dfd == AT_FDCWD)
		return put_path(off, (u64)BPF_CORE_READ(t, fs, pwd.dentry),
				(u64)BPF_CORE_READ(t, fs, pwd.mnt));
	return put_file_path(off, fd_file(t, (int)dfd));
}

/* ---- process lifecycle ---- */

/* Inode times before 6.11 (timespec64; renamed with a leading __ in 6.6 and 6.7). */
struct inode___v67 {
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));
struct inode___v66 {
	struct timespec64 i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));
struct inode___v5 {
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

/* Size, mtime and ctime of `inode` into `body`; false if this kernel's inode has none of the
 * layouts known here. */
static __always_inline bool image_version(struct inode *inode, struct exec_body *body)
{
	struct inode___v67 *v67 = (void *)inode;
	struct inode___v66 *v66 = (void *)inode;
	struct inode___v5 *v5 = (void *)inode;

	body->size = BPF_CORE_READ(inode, i_size);
	if (bpf_core_field_exists(inode->i_mtime_sec)) {
		body->mtime_sec = BPF_CORE_READ(inode, i_mtime_sec);
		body->mtime_nsec = BPF_CORE_READ(inode, i_mtime_nsec);
		body->ctime_sec = BPF_CORE_READ(inode, i_ctime_sec);
		/* Since 6.13 the top bit says whether the time was queried (multigrain times). */
		body->ctime_nsec = BPF_CORE_READ(inode, i_ctime_nsec) & ~(1U << 31);
	} else if (bpf_core_field_exists(v67->__i_mtime)) {
		body->mtime_sec = BPF_CORE_READ(v67, __i_mtime.tv_sec);
		body->mtime_nsec = BPF_CORE_READ(v67, __i_mtime.tv_nsec);
		body->ctime_sec = BPF_CORE_READ(v67, __i_ctime.tv_sec);
		body->ctime_nsec = BPF_CORE_READ(v67, __i_ctime.tv_nsec);
	} else if (bpf_core_field_exists(v66->__i_ctime)) {
		body->mtime_sec = BPF_CORE_READ(v66, i_mtime.tv_sec);
		body->mtime_nsec = BPF_CORE_READ(v66, i_mtime.tv_nsec);
		body->ctime_sec = BPF_CORE_READ(v66, __i_ctime.tv_sec);
		body->ctime_nsec = BPF_CORE_READ(v66, __i_ctime.tv_nsec);
	} else if (bpf_core_field_exists(v5->i_mtime)) {
		body->mtime_sec = BPF_CORE_READ(v5, i_mtime.tv_sec);
		body->mtime_nsec = BPF_CORE_READ(v5, i_mtime.tv_nsec);
		body->ctime_sec = BPF_CORE_READ(v5, i_ctime.tv_sec);
		body->ctime_nsec = BPF_CORE_READ(v5, i_ctime.tv_nsec);
	} else {
		return false;
	}
	return true;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct task_struct *t;
	struct buf *b = begin(EV_EXEC, &t);
	if (!b)
		return 0;
	struct exec_body *body = (void *)&b->data[sizeof(struct hdr)];
	struct mm_struct *mm = BPF_CORE_READ(t, mm);
	struct file *exe = BPF_CORE_READ(mm, exe_file);
	struct inode *inode = BPF_CORE_READ(exe, f_inode);
	char prefix[6] = {};

	body->inode = BPF_CORE_READ(inode, i_ino);
	body->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	body->nlink = BPF_CORE_READ(inode, i_nlink);
	body->flags = body->nlink == 0 ? EXEC_DELETED : 0;
	if (image_version(inode, body))
		body->flags |= EXEC_VERSION;
	else
		body->size = body->mtime_sec = body->ctime_sec = body->mtime_nsec = body->ctime_nsec = 0;
	bpf_probe_read_kernel(prefix, sizeof(prefix), BPF_CORE_READ(exe, f_path.dentry, d_name.name));
	if (prefix[0] == 'm' && prefix[1] == 'e' && prefix[2] == 'm' && prefix[3] == 'f' &&
	    prefix[4] == 'd' && prefix[5] == ':')
		body->flags |= EXEC_MEMFD;

	u32 off = sizeof(struct hdr) + sizeof(*body);
	off = put_str(b, off, BPF_CORE_READ(bprm, filename), false);

	/* argv: NUL-separated strings the new image got on its stack. */
	off = desc_at(off);
	if (off > DATA_MASK)
		return 0;
	struct sect *s = (void *)&b->data[off];
	u64 arg_start = BPF_CORE_READ(mm, arg_start);
	u64 len = BPF_CORE_READ(mm, arg_end) - arg_start;
	if (len > CHUNK) {
		len = CHUNK;
		body->flags |= EXEC_ARGV_TRUNC;
	}
	len = bound(len, LEN_MASK);
	if (bpf_probe_read_user(&b->data[bound(off, DATA_MASK) + 4], len, (void *)arg_start))
		len = 0;
	s->len = len;
	s->flags = body->flags & EXEC_ARGV_TRUNC ? SECT_TRUNC : 0;
	off += 4 + len;

	off = put_path(off, (u64)BPF_CORE_READ(t, fs, pwd.dentry), (u64)BPF_CORE_READ(t, fs, pwd.mnt));
	submit(b, off);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 pid = BPF_CORE_READ(child, pid);
	u32 tgid = BPF_CORE_READ(child, tgid);
	if (pid != tgid || (ignore_tgid && tgid == ignore_tgid))
		return 0;
	struct buf *b = get_buf();
	if (!b)
		return 0;
	fill_hdr((void *)b->data, EV_FORK, child, false);
	submit(b, sizeof(struct hdr));
	return 0;
}

static __always_inline void emit_write_close(struct task_struct *t, struct file *f,
					     struct write_fd *w)
{
	struct buf *b = get_buf();
	if (!b)
		return;
	fill_hdr((void *)b->data, EV_WRITE_CLOSE, t, true);
	struct write_close_body *body = (void *)&b->data[sizeof(struct hdr)];
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	body->inode = BPF_CORE_READ(inode, i_ino);
	body->size = BPF_CORE_READ(inode, i_size);
	body->open_ns = w->open_ns;
	body->flags = w->flags;
	body->_pad = 0;
	u32 off = put_file_path(sizeof(struct hdr) + sizeof(*body), f);
	submit(b, off);
}

struct sweep_ctx {
	struct task_struct *task;
	struct file **fds;
	u32 tgid;
};

static long sweep_fd(u32 fd, struct sweep_ctx *c)
{
	struct fd_key key = { .tgid = c->tgid, .fd = fd };
	struct write_fd *w = bpf_map_lookup_elem(&write_fds, &key);
	struct file *f = NULL;
	if (!w)
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &c->fds[fd]);
	if (f && (u64)f == w->file)
		emit_write_close(c->task, f, w);
	bpf_map_delete_elem(&write_fds, &key);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	u32 tgid = BPF_CORE_READ(t, tgid);
	/* Only the last thread of the group reports (signal->live already dropped to 0). */
	if (BPF_CORE_READ(t, signal, live.counter) != 0 || (ignore_tgid && tgid == ignore_tgid))
		return 0;

	/* Files still open at exit are closed without close(): report the tracked ones. */
	if (bpf_map_lookup_elem(&write_tgids, &tgid)) {
		struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
		struct sweep_ctx c = { .task = t, .fds = BPF_CORE_READ(fdt, fd), .tgid = tgid };
		u32 max = BPF_CORE_READ(fdt, max_fds);
		if (c.fds)
			bpf_loop(max < 4096 ? max : 4096, sweep_fd, &c, 0);
		bpf_map_delete_elem(&write_tgids, &tgid);
	}

	struct buf *b = get_buf();
	if (!b)
		return 0;
	fill_hdr((void *)b->data, EV_EXIT, t, true);
	struct exit_body *body = (void *)&b->data[sizeof(struct hdr)];
	u32 code = BPF_CORE_READ(t, exit_code);
	if (BPF_CORE_READ(t, signal, flags) & SIGNAL_GROUP_EXIT)
		code = BPF_CORE_READ(t, signal, group_exit_code);
	body->code = code;
	body->_pad = 0;
	submit(b, sizeof(struct hdr) + sizeof(*body));
	return 0;
}

/* ---- syscalls: stash arguments at enter, report at exit ---- */

static __always_inline bool ignored(void)
{
	return ignore_tgid && (bpf_get_current_pid_tgid() >> 32) == ignore_tgid;
}

static __always_inline void stash(u32 op, s64 a0, s64 a1, s64 a2, s64 a3, s64 a4)
{
	u64 id = bpf_get_current_pid_tgid();
	struct pending p = { .op = op, .args = { a0, a1, a2, a3, a4 } };
	bpf_map_update_elem(&pending, &id, &p, BPF_ANY);
}

/* Takes this thread's stashed arguments if they belong to `op`. */
static __always_inline bool take(u32 op, struct pending *out)
{
	u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &id);
	if (!p)
		return false;
	bool ok = p->op == op;
	if (ok)
		__builtin_memcpy(out, p, sizeof(*out));
	bpf_map_delete_elem(&pending, &id);
	return ok;
}

static __always_inline int open_enter(s64 flags)
{
	if (ignored() || !(flags & WRITE_INTENT) || (flags & O_PATH))
		return 0;
	stash(PEND_OPEN, flags, 0, 0, 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return open_enter(ctx->args[2]);
}

SEC("tp/syscalls/sys_enter_open")
int enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return open_enter(ctx->args[1]);
}

SEC("tp/syscalls/sys_enter_creat")
int enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return open_enter(O_CREAT | O_WRONLY | O_TRUNC);
}

SEC("tp/syscalls/sys_enter_openat2")
int enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	u64 flags = 0; /* struct open_how starts with u64 flags */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);
	return open_enter(flags);
}

static __always_inline int open_exit(long ret)
{
	struct pending p;
	if (!take(PEND_OPEN, &p) || ret < 0)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct file *f = fd_file(t, ret);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFREG)
		return 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct fd_key key = { .tgid = tgid, .fd = ret };
	/* The kernel marks a file this very open created (FMODE_CREATED, include/linux/fs.h):
	 * passed on in the top bit of the flags, so the agent need not stat it. */
	u32 flags = p.args[0];
	if (BPF_CORE_READ(f, f_mode) & RAMPART_FMODE_CREATED)
		flags |= RAMPART_FILE_CREATED;
	struct write_fd w = {
		.file = (u64)f, .open_ns = bpf_ktime_get_boot_ns(), .flags = flags
	};
	bpf_map_update_elem(&write_fds, &key, &w, BPF_ANY);
	u32 one = 1;
	bpf_map_update_elem(&write_tgids, &tgid, &one, BPF_NOEXIST);
	return 0;
}

SEC("tp/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_open")
int exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_creat")
int exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_openat2")
int exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	if (ignored())
		return 0;
	struct fd_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = ctx->args[0] };
	struct write_fd *w = bpf_map_lookup_elem(&write_fds, &key);
	if (!w)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct file *f = fd_file(t, key.fd);
	if (f && (u64)f == w->file)
		emit_write_close(t, f, w);
	bpf_map_delete_elem(&write_fds, &key);
	return 0;
}

SEC("tp/syscalls/sys_enter_unlink")
int enter_unlink(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_DELETE, AT_FDCWD, ctx->args[0], 0, 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_rmdir")
int enter_rmdir(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_DELETE, AT_FDCWD, ctx->args[0], AT_REMOVEDIR, 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_unlinkat")
int enter_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_DELETE, ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

static __always_inline int delete_exit(long ret)
{
	struct pending p;
	struct task_struct *t;
	if (!take(PEND_DELETE, &p) || ret != 0)
		return 0;
	struct buf *b = begin(EV_DELETE, &t);
	if (!b)
		return 0;
	struct u32_body *body = (void *)&b->data[sizeof(struct hdr)];
	body->value = (p.args[2] & AT_REMOVEDIR) != 0;
	body->_pad = 0;
	u32 off = put_at_path(b, sizeof(struct hdr) + sizeof(*body), t, p.args[0],
			      (const char *)p.args[1]);
	submit(b, off);
	return 0;
}

SEC("tp/syscalls/sys_exit_unlink")
int exit_unlink(struct trace_event_raw_sys_exit *ctx)
{
	return delete_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_rmdir")
int exit_rmdir(struct trace_event_raw_sys_exit *ctx)
{
	return delete_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_unlinkat")
int exit_unlinkat(struct trace_event_raw_sys_exit *ctx)
{
	return delete_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_rename")
int enter_rename(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_RENAME, AT_FDCWD, ctx->args[0], AT_FDCWD, ctx->args[1], 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_renameat")
int enter_renameat(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_RENAME, ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3], 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_renameat2")
int enter_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_RENAME, ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3], 0);
	return 0;
}

static __always_inline int rename_exit(long ret)
{
	struct pending p;
	struct task_struct *t;
	if (!take(PEND_RENAME, &p) || ret != 0)
		return 0;
	struct buf *b = begin(EV_RENAME, &t);
	if (!b)
		return 0;
	u32 off = put_at_path(b, sizeof(struct hdr), t, p.args[0], (const char *)p.args[1]);
	off = put_at_path(b, off, t, p.args[2], (const char *)p.args[3]);
	submit(b, off);
	return 0;
}

SEC("tp/syscalls/sys_exit_rename")
int exit_rename(struct trace_event_raw_sys_exit *ctx)
{
	return rename_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_renameat")
int exit_renameat(struct trace_event_raw_sys_exit *ctx)
{
	return rename_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_renameat2")
int exit_renameat2(struct trace_event_raw_sys_exit *ctx)
{
	return rename_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_chmod")
int enter_chmod(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_CHMOD, AT_FDCWD, ctx->args[0], ctx->args[1], 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_fchmodat")
int enter_fchmodat(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_CHMOD, ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_fchmodat2")
int enter_fchmodat2(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_CHMOD, ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_fchmod")
int enter_fchmod(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_FCHMOD, ctx->args[0], 0, ctx->args[1], 0, 0);
	return 0;
}

/* args: dfd, path (0 for fchmod: the fd's own path), mode. */
static __always_inline int chmod_exit(u32 op, long ret)
{
	struct pending p;
	struct task_struct *t;
	if (!take(op, &p) || ret != 0)
		return 0;
	struct buf *b = begin(EV_CHMOD, &t);
	if (!b)
		return 0;
	struct u32_body *body = (void *)&b->data[sizeof(struct hdr)];
	body->value = p.args[2] & 07777;
	body->_pad = 0;
	u32 off = put_at_path(b, sizeof(struct hdr) + sizeof(*body), t, p.args[0],
			      (const char *)p.args[1]);
	submit(b, off);
	return 0;
}

SEC("tp/syscalls/sys_exit_chmod")
int exit_chmod(struct trace_event_raw_sys_exit *ctx)
{
	return chmod_exit(PEND_CHMOD, ctx->ret);
}

SEC("tp/syscalls/sys_exit_fchmodat")
int exit_fchmodat(struct trace_event_raw_sys_exit *ctx)
{
	return chmod_exit(PEND_CHMOD, ctx->ret);
}

SEC("tp/syscalls/sys_exit_fchmodat2")
int exit_fchmodat2(struct trace_event_raw_sys_exit *ctx)
{
	return chmod_exit(PEND_CHMOD, ctx->ret);
}

SEC("tp/syscalls/sys_exit_fchmod")
int exit_fchmod(struct trace_event_raw_sys_exit *ctx)
{
	return chmod_exit(PEND_FCHMOD, ctx->ret);
}

/* ---- network ---- */

static __always_inline struct socket *fd_socket(struct task_struct *t, s64 fd)
{
	struct file *f = fd_file(t, fd);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	return BPF_CORE_READ(f, private_data);
}

static __always_inline struct sock *fd_sock(struct task_struct *t, s64 fd, u16 *sock_type)
{
	struct socket *sock = fd_socket(t, fd);
	if (!sock)
		return NULL;
	*sock_type = BPF_CORE_READ(sock, type);
	return BPF_CORE_READ(sock, sk);
}

/* Fills local (and, with `remote`, peer) address from the socket; false if not IPv4/IPv6. */
static __always_inline bool sock_addrs(struct net_body *n, struct sock *sk, bool remote)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return false;
	n->protocol = BPF_CORE_READ(sk, sk_protocol);
	n->lfamily = family;
	n->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__builtin_memset(n->laddr, 0, sizeof(n->laddr));
	if (family == AF_INET)
		bpf_core_read(n->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
	else
		bpf_core_read(n->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	if (!remote)
		return true;
	n->rfamily = family;
	n->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(n->raddr, 0, sizeof(n->raddr));
	if (family == AF_INET)
		bpf_core_read(n->raddr, 4, &sk->__sk_common.skc_daddr);
	else
		bpf_core_read(n->raddr, 16, &sk->__sk_common.skc_v6_daddr);
	return true;
}

static __always_inline struct net_body *begin_net(struct buf *b, s32 result)
{
	struct net_body *n = (void *)&b->data[sizeof(struct hdr)];
	__builtin_memset(n, 0, sizeof(*n));
	n->result = result;
	return n;
}

/* The peer address passed to connect (sockaddr_in / sockaddr_in6). */
static __always_inline void connect_peer(struct net_body *n, const u8 *addr)
{
	n->rfamily = *(u16 *)addr;
	n->rport = bpf_ntohs(*(u16 *)&addr[2]);
	if (n->rfamily == AF_INET)
		__builtin_memcpy(n->raddr, &addr[4], 4);
	else
		__builtin_memcpy(n->raddr, &addr[8], 16);
}

/* A connect's local address, once the handshake ended. On failure the kernel has already
 * released the port (skc_num is 0) but the source port stays in inet_sport. */
static __always_inline void connect_local(struct net_body *n, struct sock *sk)
{
	if (sock_addrs(n, sk, false) && !n->lport)
		n->lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
}

/* Why a connecting socket closed: the error the kernel stored for the application (sk_err:
 * ECONNREFUSED for a reset, ETIMEDOUT, or an ICMP error such as EHOSTUNREACH), else a soft
 * error seen during the handshake (an ICMP error that arrived while the socket was busy), else
 * ECONNABORTED, what connect() itself returns for a socket closed without an error (the
 * application closed or disconnected it before the handshake ended). */
static __always_inline s32 close_error(struct sock *sk)
{
	s32 err = BPF_CORE_READ(sk, sk_err);
	if (err <= 0)
		err = BPF_CORE_READ(sk, sk_err_soft);
	return err > 0 ? -err : -ECONNABORTED;
}

/* Starts following a TCP connect of the current task: its record, with the peer address
 * passed to connect and result 0 until the outcome is known, kept in `conns`. */
static __always_inline void track_connect(u64 key, const u8 *addr)
{
	struct sock *sk = (void *)key;
	struct buf *b = get_buf();
	if (!b)
		return;
	struct conn *c = (void *)b->data;
	fill_hdr(&c->rec.hdr, EV_CONNECT, (struct task_struct *)bpf_get_current_task(), true);
	c->rec.hdr.len = sizeof(c->rec);
	__builtin_memset(&c->rec.net, 0, sizeof(c->rec.net));
	if (!sock_addrs(&c->rec.net, sk, false))
		return;
	c->rec.net.sock_type = BPF_CORE_READ(sk, sk_type);
	connect_peer(&c->rec.net, addr);
	c->outcome = 0;
	c->has_outcome = 0;
	bpf_map_update_elem(&conns, &key, c, BPF_ANY);
}

/* Reports a followed connect if this caller wins it (deletes its entry): the record taken at
 * the call, with the time of now, `result` and, given `sk`, the local address read again. No
 * scratch buffer: this also runs in softirq. */
static __always_inline void report_connect(u64 key, struct conn *c, s32 result, struct sock *sk)
{
	struct conn_rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	/* Copied before the delete: a deleted LRU element is reused at once. */
	if (r)
		__builtin_memcpy(r, &c->rec, sizeof(*r));
	if (bpf_map_delete_elem(&conns, &key)) {
		if (r)
			bpf_ringbuf_discard(r, 0);
		return;
	}
	if (!r) {
		count_drop(EV_CONNECT);
		return;
	}
	r->hdr.len = sizeof(*r);
	r->hdr.time_ns = bpf_ktime_get_boot_ns();
	r->net.result = result;
	if (sk)
		connect_local(&r->net, sk);
	bpf_ringbuf_submit(r, 0);
}

SEC("tp/syscalls/sys_enter_connect")
int enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	if (ignored())
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	struct pending p = { .op = PEND_CONNECT, .args = { ctx->args[0] } };
	u32 len = ctx->args[2];
	if (len > sizeof(p.addr))
		len = sizeof(p.addr);
	/* p.addr and _pad2 are 32 bytes: the mask keeps the (already clamped) length in them. */
	if (bpf_probe_read_user(p.addr, bound(len, 31), (void *)ctx->args[1]))
		return 0;
	u16 family = *(u16 *)p.addr;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	/* TCP: the outcome of the handshake is reported, not what the call returns. */
	struct socket *sock = fd_socket((struct task_struct *)bpf_get_current_task(), p.args[0]);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP) {
		p.args[1] = (u64)sk;
		if (BPF_CORE_READ(sock, state) == SS_CONNECTING)
			p.args[2] = 1;
		else
			track_connect(p.args[1], p.addr);
	}
	bpf_map_update_elem(&pending, &id, &p, BPF_ANY);
	return 0;
}

/* connect() returned before the handshake ended; it goes on in the kernel (non-blocking socket,
 * SO_SNDTIMEO expired, or a signal). */
static __always_inline bool connect_waits(s32 ret)
{
	return ret == -EINPROGRESS || ret == -EALREADY || ret == -EINTR || ret == -ERESTARTSYS;
}

/* The end of connect() on a TCP socket (`key`): reports if the call saw the outcome, else leaves
 * the report to inet_sock_set_state. */
static __always_inline void tcp_connect_exit(u64 key, bool repeat, s32 ret, const u8 *addr)
{
	struct sock *sk = (void *)key;
	bool waits = connect_waits(ret);
	struct conn *c = bpf_map_lookup_elem(&conns, &key);
	if (!c) {
		/* Reported already (the outcome came first), or never followed (the entry was
		 * evicted, or the connect began before the sensor): follow it if still running. */
		u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
		if (waits && (state == TCP_SYN_SENT || state == TCP_SYN_RECV))
			track_connect(key, addr);
		return;
	}
	if (c->has_outcome) {
		/* The handshake ended inside the call: an error the call returns wins (it may have
		 * failed after the state change), unless the call only says "in progress". */
		report_connect(key, c, waits ? c->outcome : ret, NULL);
	} else if (!waits && !repeat) {
		/* Ended without a handshake outcome (e.g. no route, no free port, or a deferred
		 * TCP Fast Open connect): the call's result, as for other protocols. */
		report_connect(key, c, ret, sk);
	}
}

SEC("tp/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct pending p;
	struct task_struct *t;
	u16 sock_type = 0;
	if (!take(PEND_CONNECT, &p))
		return 0;
	if (p.args[1]) {
		tcp_connect_exit(p.args[1], p.args[2] != 0, ctx->ret, p.addr);
		return 0;
	}
	struct buf *b = begin(EV_CONNECT, &t);
	if (!b)
		return 0;
	struct sock *sk = fd_sock(t, p.args[0], &sock_type);
	if (!sk)
		return 0;
	struct net_body *n = begin_net(b, ctx->ret);
	if (!sock_addrs(n, sk, false))
		return 0;
	n->sock_type = sock_type;
	connect_peer(n, p.addr);
	submit(b, sizeof(struct hdr) + sizeof(*n));
	return 0;
}

/* The end of a followed TCP handshake: SYN_SENT (or SYN_RECV, simultaneous open) to ESTABLISHED
 * or CLOSE. Runs in any context (mostly softirq, as packets arrive). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_sock_state, const struct sock *ssk, const int oldstate, const int newstate)
{
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	u64 key = (u64)ssk;
	struct conn *c = bpf_map_lookup_elem(&conns, &key);
	if (!c || c->has_outcome)
		return 0;
	struct sock *sk = (struct sock *)ssk;
	if (oldstate != TCP_SYN_SENT && oldstate != TCP_SYN_RECV) {
		/* Not a handshake's end (it was missed): forget the socket once closed. */
		if (newstate == TCP_CLOSE)
			bpf_map_delete_elem(&conns, &key);
		return 0;
	}
	s32 result = newstate == TCP_ESTABLISHED ? 0 : close_error(sk);
	/* Inside the connect() call (in its thread, e.g. a loopback reply handled as the call
	 * releases the socket): its sys_exit reports, as it may still fail. Sequential with it,
	 * so plain stores do. */
	u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &id);
	if (p && p->op == PEND_CONNECT && (u64)p->args[1] == key) {
		c->outcome = result;
		connect_local(&c->rec.net, sk);
		c->has_outcome = 1;
		return 0;
	}
	report_connect(key, c, result, sk);
	return 0;
}

static __always_inline int accept_exit(long ret)
{
	struct task_struct *t;
	u16 sock_type = 0;
	if (ret < 0)
		return 0;
	struct buf *b = begin(EV_ACCEPT, &t);
	if (!b)
		return 0;
	struct sock *sk = fd_sock(t, ret, &sock_type);
	if (!sk)
		return 0;
	struct net_body *n = begin_net(b, 0);
	if (!sock_addrs(n, sk, true))
		return 0;
	n->sock_type = sock_type;
	submit(b, sizeof(struct hdr) + sizeof(*n));
	return 0;
}

SEC("tp/syscalls/sys_exit_accept")
int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_listen")
int enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	if (!ignored())
		stash(PEND_LISTEN, ctx->args[0], 0, 0, 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_exit_listen")
int exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	struct pending p;
	struct task_struct *t;
	u16 sock_type = 0;
	if (!take(PEND_LISTEN, &p) || ctx->ret != 0)
		return 0;
	struct buf *b = begin(EV_LISTEN, &t);
	if (!b)
		return 0;
	struct sock *sk = fd_sock(t, p.args[0], &sock_type);
	if (!sk)
		return 0;
	struct net_body *n = begin_net(b, 0);
	if (!sock_addrs(n, sk, false))
		return 0;
	n->sock_type = sock_type;
	n->rfamily = n->lfamily;
	submit(b, sizeof(struct hdr) + sizeof(*n));
	return 0;
}

/* ---- privilege and kernel changes ---- */

/* The module_load tracepoint's format (stable since 2.6.33); not in vmlinux.h on kernels built
 * without CONFIG_MODULES, where userspace leaves this program unloaded. */
struct module_load_args {
	u64 common;
	u32 taints;
	u32 name_loc; /* __data_loc char[]: offset in the low 16 bits */
};

SEC("tp/module/module_load")
int on_module_load(struct module_load_args *ctx)
{
	struct task_struct *t;
	struct buf *b = begin(EV_MODULE, &t);
	if (!b)
		return 0;
	u32 off = put_str(b, sizeof(struct hdr), (void *)ctx + (ctx->name_loc & 0xffff), false);
	submit(b, off);
	return 0;
}

SEC("tp/syscalls/sys_enter_ptrace")
int enter_ptrace(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *t;
	s64 request = ctx->args[0];
	if (request != PTRACE_ATTACH && request != PTRACE_SEIZE)
		return 0;
	struct buf *b = begin(EV_PTRACE, &t);
	if (!b)
		return 0;
	struct ptrace_body *body = (void *)&b->data[sizeof(struct hdr)];
	body->request = request;
	body->target = ctx->args[1];
	body->_pad = 0;
	submit(b, sizeof(struct hdr) + sizeof(*body));
	return 0;
}

enum setid_call {
	CALL_SETUID,
	CALL_SETGID,
	CALL_SETREUID,
	CALL_SETREGID,
	CALL_SETRESUID,
	CALL_SETRESGID,
	CALL_SETFSUID,
	CALL_SETFSGID,
	CALL_CAPSET,
};

/* Reports the credentials in force after a successful call. setfs[ug]id return the previous id
 * instead of 0: they count as a change when the new id differs. */
static __always_inline int setid_exit(u32 call, long ret)
{
	struct task_struct *t;
	const struct cred *cred;
	if (call == CALL_SETFSUID || call == CALL_SETFSGID) {
		cred = (void *)BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), cred);
		u32 now = call == CALL_SETFSUID ? BPF_CORE_READ(cred, fsuid.val)
						: BPF_CORE_READ(cred, fsgid.val);
		if ((u32)ret == now)
			return 0;
	} else if (ret != 0) {
		return 0;
	}
	struct buf *b = begin(EV_SETID, &t);
	if (!b)
		return 0;
	cred = BPF_CORE_READ(t, cred);
	struct setid_body *body = (void *)&b->data[sizeof(struct hdr)];
	body->call = call;
	body->uid = BPF_CORE_READ(cred, uid.val);
	body->euid = BPF_CORE_READ(cred, euid.val);
	body->suid = BPF_CORE_READ(cred, suid.val);
	body->fsuid = BPF_CORE_READ(cred, fsuid.val);
	body->gid = BPF_CORE_READ(cred, gid.val);
	body->egid = BPF_CORE_READ(cred, egid.val);
	body->sgid = BPF_CORE_READ(cred, sgid.val);
	body->fsgid = BPF_CORE_READ(cred, fsgid.val);
	body->_pad = 0;
	/* kernel_cap_t is a u64 (6.3+) or u32[2]: the first 8 bytes are the mask either way. */
	body->cap_effective = 0;
	body->cap_permitted = 0;
	bpf_probe_read_kernel(&body->cap_effective, 8, &cred->cap_effective);
	bpf_probe_read_kernel(&body->cap_permitted, 8, &cred->cap_permitted);
	submit(b, sizeof(struct hdr) + sizeof(*body));
	return 0;
}

#define SETID_PROG(name, call)                                       \
	SEC("tp/syscalls/sys_exit_" #name)                           \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)        \
	{                                                            \
		return setid_exit(call, ctx->ret);                   \
	}

SETID_PROG(setuid, CALL_SETUID)
SETID_PROG(setgid, CALL_SETGID)
SETID_PROG(setreuid, CALL_SETREUID)
SETID_PROG(setregid, CALL_SETREGID)
SETID_PROG(setresuid, CALL_SETRESUID)
SETID_PROG(setresgid, CALL_SETRESGID)
SETID_PROG(setfsuid, CALL_SETFSUID)
SETID_PROG(setfsgid, CALL_SETFSGID)
SETID_PROG(capset, CALL_CAPSET)

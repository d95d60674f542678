//! Listening sockets: one SO_REUSEPORT socket per shard on every configured
//! address, all bound by the main thread in shard order before the executors
//! start, so that port 0 resolves to one port for all of them and socket *i*
//! of each reuseport group belongs to shard *i*.
//!
//! CPU steering (`cpu_steering`, with pinned executors): a classic BPF
//! program on each group picks, for every new connection, the socket of the
//! shard pinned to the CPU that processes the connection's first packet (the
//! CPU of the network interrupt, or of a local client). The connection's
//! packets and its session then stay on one CPU: no cross-CPU wake-up per
//! packet. A CPU without an executor gets an index past the group's end,
//! which makes the kernel fall back to its usual hash.
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use super::shard::Proto;

/// Pending connections per listening socket.
const BACKLOG: i32 = 1024;

struct Group {
    proto: Proto,
    /// Socket *i* for shard *i*; each shard takes its own when it starts.
    socks: Vec<Mutex<Option<OwnedFd>>>,
    /// A second descriptor of socket 0, to attach the steering program once
    /// the shards have reported their CPUs; closed right after (it would
    /// otherwise keep shard 0's socket listening after shard 0 stopped).
    handle: Mutex<Option<OwnedFd>>,
}

pub struct Listeners {
    groups: Vec<Group>,
}

/// The listeners and each protocol's bound addresses, or the address that failed.
type Bound = Result<(Listeners, Vec<Vec<SocketAddr>>), (SocketAddr, std::io::Error)>;

impl Listeners {
    /// Bind `shards` listening sockets on every address of every protocol.
    /// Returns them with each protocol's addresses as bound (port 0 resolved).
    pub fn bind(protos: &[(Proto, &[SocketAddr])], shards: usize) -> Bound {
        let mut groups = Vec::new();
        let mut bound = Vec::new();
        for (proto, addrs) in protos {
            let mut resolved = Vec::new();
            for addr in addrs.iter() {
                let mut at = *addr;
                let mut socks = Vec::with_capacity(shards);
                for _ in 0..shards {
                    let s = listen_socket(at).map_err(|e| (*addr, e))?;
                    // The first socket fixes the port; the others join its group.
                    at = s
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .unwrap_or(at);
                    socks.push(Mutex::new(Some(OwnedFd::from(s))));
                }
                resolved.push(at);
                let handle = socks[0]
                    .lock()
                    .ok()
                    .and_then(|g| g.as_ref().and_then(|fd| fd.try_clone().ok()));
                groups.push(Group {
                    proto: *proto,
                    socks,
                    handle: Mutex::new(handle),
                });
            }
            bound.push(resolved);
        }
        Ok((Listeners { groups }, bound))
    }

    /// Shard `shard`'s sockets, with their protocol (once).
    pub fn take(&self, shard: usize) -> Vec<(Proto, OwnedFd)> {
        self.groups
            .iter()
            .filter_map(|g| {
                let fd = g.socks.get(shard)?.lock().ok()?.take()?;
                Some((g.proto, fd))
            })
            .collect()
    }

    /// With `Some(cpus)`, attach the steering program to every group: a
    /// connection first seen on CPU `cpus[i]` goes to shard `i`. Either way,
    /// close the extra descriptors. Fails if the kernel refuses the program.
    pub fn finish(&self, cpus: Option<&[usize]>) -> std::io::Result<()> {
        let prog = cpus.map(steering_program);
        let mut result = Ok(());
        for g in &self.groups {
            let Some(fd) = g.handle.lock().ok().and_then(|mut h| h.take()) else {
                continue;
            };
            let Some(prog) = &prog else { continue };
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: setsockopt on a socket we own, with a program that lives
            // across the call; the kernel copies it.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_REUSEPORT_CBPF,
                    &fprog as *const libc::sock_fprog as *const libc::c_void,
                    std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
                )
            };
            if r != 0 && result.is_ok() {
                result = Err(std::io::Error::last_os_error());
            }
        }
        result
    }
}

/// A listening, SO_REUSEPORT socket on `addr` (IPv6 sockets are IPv6-only,
/// so `[::]` and `0.0.0.0` can both be configured).
fn listen_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Accepted sockets inherit it (Linux copies the listener's TCP
    // options into each new connection): replies go out at once instead of
    // waiting for a delayed ACK, with no setsockopt per connection.
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s)
}

/// The classic BPF steering program: `A = cpu; if A == cpus[i] return i;
/// return past-the-end` (past the end means: kernel hash).
fn steering_program(cpus: &[usize]) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut p = vec![stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
    )];
    for (shard, cpu) in cpus.iter().enumerate() {
        // If equal, fall into the next instruction (return shard); else skip it.
        p.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: *cpu as u32,
        });
        p.push(stmt(libc::BPF_RET | libc::BPF_K, shard as u32));
    }
    p.push(stmt(libc::BPF_RET | libc::BPF_K, u32::MAX));
    p
}

/// The one CPU the calling thread may run on, if it is pinned to exactly one.
pub fn pinned_cpu() -> Option<usize> {
    // SAFETY: sched_getaffinity fills a cpu_set_t we own; the CPU_* helpers
    // only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        if libc::CPU_COUNT(&set) != 1 {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize).find(|c| libc::CPU_ISSET(*c, &set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the classic BPF program on a given CPU number (only the
    /// instructions `steering_program` emits).
    fn run(prog: &[libc::sock_filter], cpu: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                assert_eq!(i.k, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32);
                a = cpu;
                pc += 1;
            } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                pc += 1 + if a == i.k {
                    i.jt as usize
                } else {
                    i.jf as usize
                };
            } else if code == libc::BPF_RET | libc::BPF_K {
                return i.k;
            } else {
                panic!("unexpected instruction {code:#x}");
            }
        }
    }

    #[test]
    fn program_maps_each_shard_cpu_to_its_socket_and_others_to_the_hash() {
        let prog = steering_program(&[4, 0, 7]);
        assert_eq!(run(&prog, 4), 0);
        assert_eq!(run(&prog, 0), 1);
        assert_eq!(run(&prog, 7), 2);
        assert_eq!(run(&prog, 1), u32::MAX);
        assert_eq!(run(&prog, 5), u32::MAX);
    }

    #[test]
    fn sockets_share_one_port_and_the_kernel_accepts_the_program() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (l, bound) = Listeners::bind(&[(Proto::Smtp, &[addr])], 3).unwrap();
        assert_ne!(bound[0][0].port(), 0);
        let mine: Vec<_> = (0..3).map(|s| l.take(s)).collect();
        for (s, socks) in mine.iter().enumerate() {
            assert_eq!(socks.len(), 1, "shard {s}");
            let local = socket2::SockRef::from(&socks[0].1)
                .local_addr()
                .unwrap()
                .as_socket()
                .unwrap();
            assert_eq!(local, bound[0][0]);
        }
        assert!(l.take(0).is_empty(), "taken once");
        // Attaching works after the shards took their sockets.
        l.finish(Some(&[0, 1, 2])).unwrap();
    }

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let l = listen_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "the server's side has TCP_NODELAY"
        );
    }
}

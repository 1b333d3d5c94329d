//! A real one-node Slurm cluster (Debian's slurm-wlm and munge, `make test-tools` installs
//! them): munged, slurmctld and slurmd run as root from a temporary directory, the daemons on
//! 127.0.0.1 at free ports, all stopped when dropped. Client commands get the cluster's
//! configuration through `SLURM_CONF`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SlurmCluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn daemon(program: &str, args: &[&str], log: &Path) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({e}): `make test-tools` installs slurm-wlm and munge"))
}

impl SlurmCluster {
    /// Starts the cluster and waits (60 s at most) until its node is idle.
    pub fn start() -> SlurmCluster {
        assert_eq!(unsafe { libc::geteuid() }, 0, "the Slurm test starts slurmd and munged, which run as root");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        std::fs::set_permissions(d.join("munge"), std::fs::Permissions::from_mode(0o711)).unwrap();
        let key = d.join("munge/munge.key");
        let mut bytes = vec![0u8; 1024];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
        std::fs::write(&key, bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        let socket = d.join("munge/munge.socket");
        let p = |s: &str| d.join(s).display().to_string();
        let mut daemons = vec![daemon(
            "munged",
            &[
                "--foreground",
                "--force",
                &format!("--key-file={}", key.display()),
                &format!("--socket={}", socket.display()),
                &format!("--pid-file={}", p("munge/munged.pid")),
                &format!("--log-file={}", p("log/munged.log")),
                &format!("--seed-file={}", p("munge/seed")),
            ],
            &d.join("log/munged.err"),
        )];
        let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout).unwrap().trim().to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = d.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=vocml-test\n\
                 SlurmctldHost={host}(127.0.0.1)\n\
                 SlurmctldPort={}\n\
                 SlurmdPort={}\n\
                 CommunicationParameters=NoCtldInAddrAny,NoInAddrAny\n\
                 AuthType=auth/munge\n\
                 AuthInfo=socket={}\n\
                 CredType=cred/munge\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 StateSaveLocation={}\n\
                 SlurmdSpoolDir={}\n\
                 SlurmctldPidFile={}\n\
                 SlurmdPidFile={}\n\
                 SlurmctldLogFile={}\n\
                 SlurmdLogFile={}\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 SwitchType=switch/none\n\
                 MpiDefault=none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_CPU\n\
                 SlurmdParameters=config_overrides\n\
                 ReturnToService=2\n\
                 MinJobAge=3600\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=8192 State=UNKNOWN\n\
                 PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
                free_port(),
                free_port(),
                socket.display(),
                p("state"),
                p("spool"),
                p("slurmctld.pid"),
                p("slurmd.pid"),
                p("log/slurmctld.log"),
                p("log/slurmd.log"),
            ),
        )
        .unwrap();
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "munged did not start: {}",
                std::fs::read_to_string(d.join("log/munged.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let conf_s = conf.display().to_string();
        daemons.push(daemon("slurmctld", &["-D", "-c", "-f", &conf_s], &d.join("log/slurmctld.err")));
        daemons.push(daemon("slurmd", &["-D", "-f", &conf_s], &d.join("log/slurmd.err")));
        let cluster = SlurmCluster { dir, conf, daemons };
        let start = Instant::now();
        loop {
            let o = cluster.command("sinfo").args(["-h", "-o", "%t"]).output().unwrap();
            if String::from_utf8_lossy(&o.stdout).trim() == "idle" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the Slurm node did not come up: {}", cluster.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// A Slurm client command (sbatch, squeue, scancel, scontrol) pointed at this cluster.
    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `sbatch --parsable` of `script` with `args`; its job id.
    pub fn sbatch(&self, options: &[&str], script: &Path, args: &[&Path], path_env: &str) -> String {
        let o = self
            .command("sbatch")
            .arg("--parsable")
            .arg(format!("--output={}/log/job-%A_%a.out", self.dir.path().display()))
            .args(options)
            .arg(script)
            .args(args)
            .env("PATH", path_env)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        assert!(o.status.success(), "sbatch: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().split(';').next().unwrap().to_string()
    }

    /// Waits until no task of `job` is pending or running (`limit` at most).
    pub fn wait_done(&self, job: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let o = self.command("squeue").args(["-h", "-j", job]).output().unwrap();
            if o.status.success() && o.stdout.iter().all(|b| b.is_ascii_whitespace()) {
                return;
            }
            assert!(start.elapsed() < limit, "job {job} still queued after {limit:?}: {}", String::from_utf8_lossy(&o.stdout));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The state of each task of `job` (`scontrol show job`), e.g. `["COMPLETED", ...]`.
    pub fn task_states(&self, job: &str) -> Vec<(String, String)> {
        let o = self.command("scontrol").args(["show", "job", job, "-o"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let field = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("?").to_string();
                (field("ArrayTaskId="), field("JobState="))
            })
            .collect()
    }

    /// What the jobs printed and the daemons logged, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("log")).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("\n== {}\n{}", f.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        out
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        for child in self.daemons.iter_mut().rev() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

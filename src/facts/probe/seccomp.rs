//! The container's seccomp filter (OCI `linux.seccomp`) compiled to classic BPF for the probe, so
//! that image code loaded by the probe meets the filter the container's process will meet.
//!
//! libseccomp (what runc uses) builds one program in which each rule has its own action and
//! unmatched syscalls take the default action. `seccompiler` builds programs with one action on
//! match and one on mismatch, so the spec becomes several programs the kernel runs together
//! (it takes the most restrictive answer):
//!
//! * one per non-allow action (and errno value): its rules → that action, anything else → allow;
//! * one for the default action: every rule of the spec, whatever its action → allow, anything
//!   else → the default action (left out when the default is allow).
//!
//! A syscall that matches a rule gets that rule's action; one that matches none gets the default.
//! Where runc adds the conditions of one syscall entry as one rule (AND), but as separate rules
//! (OR) when two conditions name the same argument, so does this. Syscall names this
//! architecture does not have are skipped, as runc skips them. Stricter than runc in two places,
//! both invisible to a driver library: a syscall of another ABI (i386 via `int 0x80`) kills the
//! probe, and x32 syscall numbers on x86_64 fail with ENOSYS. `SCMP_ACT_NOTIFY` (a listener
//! process decides) cannot be reproduced: the probe does not run and says why.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use serde_json::{Value, json};

/// One classic BPF instruction: code, jt, jf, k.
pub type Insn = [u32; 4];

/// A syscall name and its conditions (seccompiler's JSON), `None` for an unconditional rule.
type Rule = (String, Option<Vec<Value>>);

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<Value, String> {
    use LinuxSeccompAction as A;
    // The runtime spec: ERRNO and TRACE without errnoRet return EPERM.
    let n = errno.unwrap_or(libc::EPERM as u32);
    Ok(match a {
        A::ScmpActAllow => json!("allow"),
        A::ScmpActErrno => json!({ "errno": n }),
        A::ScmpActKill | A::ScmpActKillThread => json!("kill_thread"),
        A::ScmpActKillProcess => json!("kill_process"),
        A::ScmpActTrap => json!("trap"),
        A::ScmpActTrace => json!({ "trace": n }),
        A::ScmpActLog => json!("log"),
        A::ScmpActNotify => {
            return Err(
                "its seccomp filter hands syscalls to a listener process (SCMP_ACT_NOTIFY), which the probe cannot reproduce"
                    .into(),
            );
        }
    })
}

fn condition(a: &oci_spec::runtime::LinuxSeccompArg) -> Value {
    use LinuxSeccompOperator as O;
    let (op, val) = match a.op() {
        O::ScmpCmpNe => (json!("ne"), a.value()),
        O::ScmpCmpLt => (json!("lt"), a.value()),
        O::ScmpCmpLe => (json!("le"), a.value()),
        O::ScmpCmpEq => (json!("eq"), a.value()),
        O::ScmpCmpGe => (json!("ge"), a.value()),
        O::ScmpCmpGt => (json!("gt"), a.value()),
        // libseccomp: (arg & value) == valueTwo.
        O::ScmpCmpMaskedEq => (
            json!({ "masked_eq": a.value() }),
            a.value_two().unwrap_or(0),
        ),
    };
    json!({ "index": a.index(), "type": "qword", "op": op, "val": val })
}

/// The rules of one syscall entry, as runc adds them: one rule with every condition, or one
/// rule per condition when two conditions name the same argument.
fn rules_of(args: Option<&Vec<oci_spec::runtime::LinuxSeccompArg>>) -> Vec<Option<Vec<Value>>> {
    let Some(args) = args.filter(|a| !a.is_empty()) else {
        return vec![None];
    };
    let mut seen = std::collections::HashSet::new();
    let repeated = args.iter().any(|a| !seen.insert(a.index()));
    if repeated {
        args.iter().map(|a| Some(vec![condition(a)])).collect()
    } else {
        vec![Some(args.iter().map(condition).collect())]
    }
}

fn target() -> Result<seccompiler::TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|_| format!("no seccomp compiler for {}", std::env::consts::ARCH))
}

/// Compile one seccompiler filter, skipping syscall names this architecture lacks.
fn compile_one(
    mut rules: Vec<Rule>,
    on_match: &Value,
    otherwise: &Value,
) -> Result<Vec<Insn>, String> {
    let arch = target()?;
    loop {
        let filter: Vec<Value> = rules
            .iter()
            .map(|(name, args)| match args {
                Some(a) => json!({ "syscall": name, "args": a }),
                None => json!({ "syscall": name }),
            })
            .collect();
        let doc = json!({ "f": { "match_action": on_match, "mismatch_action": otherwise, "filter": filter } });
        let text = doc.to_string();
        match seccompiler::compile_from_json(text.as_bytes(), arch) {
            Ok(mut map) => {
                let prog = map.remove("f").unwrap_or_default();
                return Ok(prog
                    .into_iter()
                    .map(|i| [u32::from(i.code), u32::from(i.jt), u32::from(i.jf), i.k])
                    .collect());
            }
            Err(seccompiler::Error::JsonFrontend(e)) => {
                // The frontend names the syscall it does not know; runc skips those.
                let msg = e.to_string();
                let unknown = msg
                    .strip_prefix("Invalid syscall name: ")
                    .and_then(|m| m.split(" for given arch").next())
                    .map(str::to_string);
                let before = rules.len();
                if let Some(u) = &unknown {
                    rules.retain(|(n, _)| n != u);
                }
                if rules.len() == before {
                    return Err(format!("compiling the container's seccomp filter: {msg}"));
                }
            }
            Err(e) => return Err(format!("compiling the container's seccomp filter: {e}")),
        }
    }
}

/// x86_64 only: x32 syscall numbers (bit 30) fail with ENOSYS, so a filter written for 64-bit
/// numbers cannot be walked around.
fn x32_guard() -> Vec<Insn> {
    const LD_W_ABS: u32 = 0x20;
    const JEQ_K: u32 = 0x15;
    const JGE_K: u32 = 0x35;
    const RET_K: u32 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    vec![
        [LD_W_ABS, 0, 0, 4], // arch
        [JEQ_K, 0, 3, AUDIT_ARCH_X86_64],
        [LD_W_ABS, 0, 0, 0], // nr
        [JGE_K, 0, 1, 0x4000_0000],
        [RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32],
        [RET_K, 0, 0, libc::SECCOMP_RET_ALLOW],
    ]
}

/// The programs to install, in order. `Err` says why the filter cannot be reproduced.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<Vec<Insn>>, String> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let allow = json!("allow");
    // Rules grouped by their action (as JSON, which keeps the errno value apart).
    let mut by_action: BTreeMap<String, (Value, Vec<Rule>)> = BTreeMap::new();
    let mut every_rule: Vec<Rule> = Vec::new();
    for sc in s.syscalls().as_deref().unwrap_or_default() {
        let a = action(sc.action(), sc.errno_ret())?;
        for rule in rules_of(sc.args().as_ref()) {
            for name in sc.names() {
                every_rule.push((name.clone(), rule.clone()));
                if a != allow {
                    by_action
                        .entry(a.to_string())
                        .or_insert_with(|| (a.clone(), Vec::new()))
                        .1
                        .push((name.clone(), rule.clone()));
                }
            }
        }
    }
    let mut out = Vec::new();
    if std::env::consts::ARCH == "x86_64" {
        out.push(x32_guard());
    }
    for (a, rules) in by_action.into_values() {
        out.push(compile_one(rules, &a, &allow)?);
    }
    if default != allow {
        out.push(compile_one(every_rule, &allow, &default)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    /// Run `programs` the way the kernel does (each on the same data, the most restrictive
    /// answer wins) over a syscall number and its first argument, with a tiny BPF interpreter.
    fn verdict(programs: &[Vec<Insn>], nr: u32, arg0: u64) -> u32 {
        let data = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => 0xc000_003e,
                16 => arg0 as u32,
                20 => (arg0 >> 32) as u32,
                _ => 0,
            }
        };
        let run = |p: &Vec<Insn>| -> u32 {
            let (mut a, mut pc) = (0u32, 0usize);
            loop {
                let [code, jt, jf, k] = p[pc];
                match code {
                    0x20 => a = data(k),
                    0x15 => pc += if a == k { jt } else { jf } as usize,
                    0x35 => pc += if a >= k { jt } else { jf } as usize,
                    0x25 => pc += if a > k { jt } else { jf } as usize,
                    0x45 => pc += if a & k != 0 { jt } else { jf } as usize,
                    0x05 => pc += k as usize,
                    0x54 => a &= k,
                    0x06 => return k,
                    other => panic!("opcode {other:#x} not in the test interpreter"),
                }
                pc += 1;
            }
        };
        let rank = |r: u32| match r & 0xffff_0000 {
            0x8000_0000 => 0,
            0 => 1,
            0x0003_0000 => 2,
            0x0005_0000 => 3,
            0x7fc0_0000 => 4,
            0x7ff0_0000 => 5,
            0x7ffc_0000 => 6,
            _ => 7,
        };
        programs.iter().map(run).min_by_key(|r| rank(*r)).unwrap()
    }

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;

    #[test]
    fn allow_list_with_default_errno_and_conditions() {
        let s = spec(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }));
        let p = compile(&s).unwrap();
        let nr = |n: i64| n as u32;
        assert_eq!(verdict(&p, nr(libc::SYS_read), 0), ALLOW);
        assert_eq!(verdict(&p, nr(libc::SYS_write), 0), ALLOW);
        assert_eq!(verdict(&p, nr(libc::SYS_mount), 0), EPERM);
        assert_eq!(verdict(&p, nr(libc::SYS_personality), 8), ALLOW);
        assert_eq!(verdict(&p, nr(libc::SYS_personality), 9), EPERM);
        assert_eq!(verdict(&p, nr(libc::SYS_clone3), 0), 0x0005_0000 | 38);
        // x32 numbers never reach a rule.
        assert_eq!(
            verdict(&p, nr(libc::SYS_read) | 0x4000_0000, 0),
            0x0005_0000 | libc::ENOSYS as u32
        );
    }

    #[test]
    fn deny_list_with_default_allow_and_masked_eq() {
        let s = spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["clone"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }));
        let p = compile(&s).unwrap();
        assert_eq!(verdict(&p, libc::SYS_mount as u32, 0), EPERM);
        assert_eq!(verdict(&p, libc::SYS_read as u32, 0), ALLOW);
        assert_eq!(
            verdict(&p, libc::SYS_clone as u32, 0x1000_0000),
            0x8000_0000
        );
        assert_eq!(verdict(&p, libc::SYS_clone as u32, 0x11), ALLOW);
    }

    #[test]
    fn a_notify_action_cannot_be_reproduced() {
        let s = spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(compile(&s).unwrap_err().contains("SCMP_ACT_NOTIFY"));
    }
}

//! The `flowdog` command.

use anyhow::Result;
use clap::{Parser, Subcommand};
use flowdog::gen::{write_pcap, GenSpec};
use flowdog::run::{run, RunOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "flowdog", version, about = "A DPDK appliance for AWS Gateway Load Balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Print a stats line every SECS seconds.
        #[arg(long, value_name = "SECS")]
        stats: Option<f64>,
        /// Stop after SECS seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Write the counters as JSON to FILE, every second and on exit.
        #[arg(long, value_name = "FILE")]
        counters_out: Option<PathBuf>,
    },
    /// The root CA of TLS interception.
    #[command(subcommand)]
    Ca(CaCmd),
    /// proxy-wasm plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Check a configuration file and print the EAL arguments it gives.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Generate traffic.
    #[command(subcommand)]
    Gen(GenCmd),
    /// Run the local Gateway Load Balancer simulator (in the lab's gw namespace).
    Gwlb {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the counters every SECS seconds.
        #[arg(long, value_name = "SECS")]
        stats: Option<u64>,
        /// Stop after SECS seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// Write the counters as JSON to FILE, every second and on exit.
        #[arg(long, value_name = "FILE")]
        counters_out: Option<PathBuf>,
        /// Capture what goes to and comes back from the targets into FILE (pcap, raw IPv4).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Check a .wasm file against the host: the proxy-wasm ABI it exports, any import the host
    /// lacks, any export the host needs that it lacks. Exits 1 when it cannot run.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Make the root CA: a local one for development (DIR/ca.key, mode 0600, and DIR/ca.pem), or
    /// with --kms-key-id one whose key stays in AWS KMS (DIR/ca.pem only).
    Init {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The root's key: a KMS asymmetric SIGN_VERIFY key (ECC_NIST_P256 or RSA_2048/3072/4096).
        /// Needs kms:GetPublicKey and kms:Sign; credentials come from the default AWS chain.
        #[arg(long, value_name = "ARN")]
        kms_key_id: Option<String>,
        /// Reach KMS at URL instead of AWS's endpoint (an emulator, a VPC endpoint).
        #[arg(long, value_name = "URL", requires = "kms_key_id")]
        kms_endpoint_url: Option<String>,
        /// The KMS region (default: the key ARN's, else AWS_REGION or the profile's).
        #[arg(long, value_name = "REGION", requires = "kms_key_id")]
        kms_region: Option<String>,
        /// The root's common name.
        #[arg(long, default_value = "flowdog root CA")]
        common_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// Replace an existing CA in DIR.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum GenCmd {
    /// Write a pcap of GWLB-style Geneve traffic (for pktgen-dpdk or testpmd's net_pcap).
    Pcap {
        #[arg(long, default_value_t = 1000)]
        flows: u32,
        /// Inner IP packet size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Fraction of flows with IPv6 inner packets (0.0–1.0).
        #[arg(long, default_value_t = 0.0)]
        ipv6_share: f64,
        /// Fraction of flows that are UDP (the rest are TCP).
        #[arg(long, default_value_t = 0.5)]
        udp_share: f64,
        /// Frames per flow, alternating direction.
        #[arg(long, default_value_t = 2)]
        packets_per_flow: u32,
        #[arg(long, default_value = "198.18.0.1")]
        gwlb_ip: std::net::Ipv4Addr,
        #[arg(long, default_value = "198.18.0.2")]
        appliance_ip: std::net::Ipv4Addr,
        #[arg(long, default_value = "02:00:00:00:00:01")]
        gwlb_mac: String,
        #[arg(long, default_value = "02:00:00:00:00:02")]
        appliance_mac: String,
        #[arg(long, default_value = "vpce-0123456789abcdef0")]
        vpc_endpoint_id: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, short)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config, stats, duration, counters_out } => {
            run(&RunOptions { config, stats, duration, counters_out })
        }
        Cmd::Gwlb { config, stats, duration, counters_out, pcap } => {
            flowdog::gwlb::run(&flowdog::gwlb::GwlbOptions { config, stats, duration, counters_out, pcap })
        }
        Cmd::Plugin(PluginCmd::Check { file }) => {
            if !flowdog::plugin::check_file(&file)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Ca(CaCmd::Init { out, kms_key_id, kms_endpoint_url, kms_region, common_name, days, force }) => {
            use flowdog::tls::{ca, kms::KmsKey};
            let spec = ca::RootSpec { common_name, valid_days: days };
            if let Some(id) = kms_key_id {
                let key = KmsKey::connect(&id, kms_endpoint_url.as_deref(), kms_region.as_deref())?;
                let cert = ca::init_kms(&out, &spec, &key, force)?;
                println!(
                    "flowdog ca init: root key in KMS {} ({}), certificate {}",
                    key.key_id(),
                    key.spec(),
                    cert.display()
                );
                println!("{}", ca::trust_instructions(&cert, Some(key.key_id())));
                return Ok(());
            }
            let files = ca::init_local(&out, &spec, force)?;
            println!(
                "flowdog ca init: root key {} (mode 0600), certificate {}",
                files.key.display(),
                files.cert.display()
            );
            println!("{}", ca::trust_instructions(&files.cert, None));
            Ok(())
        }
        Cmd::CheckConfig { config } => {
            let c = flowdog::config::Config::load(&config)?;
            println!("{}: ok", config.display());
            println!("EAL arguments: {}", c.eal_args().join(" "));
            Ok(())
        }
        Cmd::Gen(GenCmd::Pcap {
            flows,
            size,
            ipv6_share,
            udp_share,
            packets_per_flow,
            gwlb_ip,
            appliance_ip,
            gwlb_mac,
            appliance_mac,
            vpc_endpoint_id,
            seed,
            out,
        }) => {
            let mac = |s: &str, f: &str| flowdog::config::parse_mac(s).map_err(|e| anyhow::anyhow!("--{f}: {e}"));
            let spec = GenSpec {
                flows,
                size,
                ipv6_share,
                udp_share,
                packets_per_flow,
                gwlb_ip,
                appliance_ip,
                gwlb_mac: mac(&gwlb_mac, "gwlb-mac")?,
                appliance_mac: mac(&appliance_mac, "appliance-mac")?,
                vpc_endpoint_id: flowdog_core::policy::parse_vpc_endpoint_id(&vpc_endpoint_id)
                    .map_err(|e| anyhow::anyhow!("--vpc-endpoint-id: {e}"))?,
                seed,
            };
            let n = write_pcap(&spec, &out)?;
            println!("{}: {n} frames, {flows} flows, inner size {size}", out.display());
            Ok(())
        }
    }
}

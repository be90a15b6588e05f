//! The lab: topology, WAN delay line, mock inference server (grows with the lab issue).

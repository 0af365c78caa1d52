//! PINGREQ (§3.12) and PINGRESP (§3.13): fixed header only.

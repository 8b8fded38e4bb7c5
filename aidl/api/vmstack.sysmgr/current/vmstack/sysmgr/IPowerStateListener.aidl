package vmstack.sysmgr;
interface IPowerStateListener {
  oneway void onApPowerStateReq(int value, int param);
  oneway void onSystemStateChanged(in vmstack.sysmgr.SystemState state);
}

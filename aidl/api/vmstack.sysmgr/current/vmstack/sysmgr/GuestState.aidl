package vmstack.sysmgr;
parcelable GuestState {
  String name;
  String role;
  int state;
  String description;
  boolean hasApPowerStateReq;
  int apPowerStateReq;
  int apPowerStateReqParam;
  boolean binderConnected;
}
